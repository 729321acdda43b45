/* The dashboard page embedded in the binary (dashboard.c). */
#ifndef SP_DASHBOARD_H
#define SP_DASHBOARD_H

#include <stddef.h>

extern const char sp_dashboard_html[];
extern const size_t sp_dashboard_html_len;

#endif
