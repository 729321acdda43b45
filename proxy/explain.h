/* The `strangler explain` subcommand. */
#ifndef SP_EXPLAIN_H
#define SP_EXPLAIN_H

/* argv[0] is "explain". Returns the process exit code. */
int sp_explain_main(int argc, char **argv);

#endif
