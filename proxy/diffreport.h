/* The `strangler diff-report` subcommand: reads a diff log (diff and summary
 * lines) and prints per-route counts, latencies and the most
 * frequent differences. */
#ifndef SP_DIFFREPORT_H
#define SP_DIFFREPORT_H

#include <stdio.h>

/* Reads the diff log from in and writes the report to out; route, when not
 * NULL, restricts it to that route. Malformed lines are counted and named in
 * the report, never fatal. Borrows everything. Returns 0, or -1 when reading
 * in fails or memory runs out (with a message on stderr). */
int sp_diff_report(FILE *in, FILE *out, const char *route);

/* The same over several files read as one stream, in the given order ("-"
 * is stdin; with in not NULL, in is read instead of each file, named after
 * it). Returns 0, 1 when a file cannot be opened or read, -1 when memory
 * runs out (said on stderr, naming the file). Borrows everything. */
int sp_diff_report_files(const char *const *files, size_t nfiles, FILE *in, FILE *out,
			 const char *route);

/* argv[0] is "diff-report"; "diff-report FILE... [--route NAME]", FILE being
 * a path or - for stdin. Returns the process exit code: 0, 1 when a file
 * cannot be read, 2 on usage errors. */
int sp_diff_report_main(int argc, char **argv);

#endif
