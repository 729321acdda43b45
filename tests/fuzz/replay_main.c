/* Runs a fuzz harness over saved inputs, so the corpus is replayed in every
 * build (gcc or clang, with or without sanitizers) as the `fuzz` test suite
 * (systemd's fuzz-main.c and dav1d's tests/libfuzzer do the same).
 *
 * Usage: fuzz_X [FILE | DIRECTORY]...  Directories are read one level deep,
 * in name order. The exit status is non-zero only when an input crashes
 * (the harness's checks and the sanitizers abort); a path that cannot be
 * read is reported on stderr and skipped. */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "fuzz.h"

static int replay_file(const char *path)
{
	FILE *f = fopen(path, "rb");
	if (!f) {
		perror(path);
		return 0;
	}
	size_t cap = 4096, len = 0, n;
	uint8_t *data = malloc(cap);
	while (data && (n = fread(data + len, 1, cap - len, f)) > 0) {
		len += n;
		if (len == cap) {
			uint8_t *bigger = realloc(data, cap * 2);
			if (!bigger) {
				free(data);
				data = NULL;
				break;
			}
			data = bigger;
			cap *= 2;
		}
	}
	fclose(f);
	if (!data) {
		fprintf(stderr, "%s: out of memory\n", path);
		return 0;
	}
	/* An exact-size copy, so ASan catches a read past the end as libFuzzer
	 * would. */
	uint8_t *exact = malloc(len ? len : 1);
	if (exact) {
		memcpy(exact, data, len);
		fprintf(stderr, "%s\n", path); /* the last name printed is the culprit */
		LLVMFuzzerTestOneInput(exact, len);
	}
	free(exact);
	free(data);
	return exact != NULL;
}

static int by_name(const struct dirent **a, const struct dirent **b)
{
	return strcmp((*a)->d_name, (*b)->d_name);
}

static int replay_dir(const char *dir)
{
	struct dirent **names;
	int n = scandir(dir, &names, NULL, by_name), count = 0;
	if (n < 0) {
		perror(dir);
		return 0;
	}
	for (int i = 0; i < n; i++) {
		char path[4096];
		struct stat st;
		snprintf(path, sizeof(path), "%s/%s", dir, names[i]->d_name);
		if (names[i]->d_name[0] != '.' && stat(path, &st) == 0 && S_ISREG(st.st_mode))
			count += replay_file(path);
		free(names[i]);
	}
	free(names);
	return count;
}

int main(int argc, char **argv)
{
	int count = 0;
	for (int i = 1; i < argc; i++) {
		struct stat st;
		if (stat(argv[i], &st) != 0)
			perror(argv[i]);
		else if (S_ISDIR(st.st_mode))
			count += replay_dir(argv[i]);
		else
			count += replay_file(argv[i]);
	}
	printf("%d inputs replayed, no crash\n", count);
	return 0;
}
