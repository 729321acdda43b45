/* The admin API listener (admin = { address; token_file; state_file; }):
 * routes, runtime changes with audit and persistence, metrics, health. */
#ifndef SP_ADMIN_H
#define SP_ADMIN_H

#include "runtime.h"

struct sp_admin;

/* Binds rt->cfg->admin.address on rt->base. NULL (logged) on failure.
 * Borrows rt, which must outlive it. */
struct sp_admin *sp_admin_new(struct sp_runtime *rt);
void sp_admin_free(struct sp_admin **a);

#endif
