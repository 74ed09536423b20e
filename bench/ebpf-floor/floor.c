// bench/ebpf-floor/floor MODE DIR -- CMD...: the least a recorder of DiffKeeper's eBPF records of CMD can spend
// (docs/benchmarks.md, "Issue 11: the floor of a created file"). It loads DiffKeeper's own kernel side (the light
// skeleton the Native project generates), tracks CMD's process tree as `record` does, and per MODE:
//   none          consumes the ring buffer and counts the records;
//   log           appends every record to DIR/log (1 MiB writes, fdatasync at the end): an append-only event log;
//   events        a path row per file and one event row per record in SQLite (WAL, synchronous=NORMAL, a commit
//                 every 200 ms), the records themselves to DIR/pack beside it;
//   rows-noindex  the rows a trace holds for a created file (a path row at the create; per record an event row and
//                 a version row; per write a SHA-256 and a blob row, the group member; the payload to DIR/pack),
//                 without the secondary indexes (versions by session and by path, blobs by hash);
//   rows          the same with the format's indexes.
// Not a recorder: no stat, no reconcile walk, no zstd, no dedup lookup, no write runs, no .NET start. It prints its
// own CPU and the command's (getrusage). FLOOR_NOMEMSTATUS=1 turns SQLite's memory statistics off first.
// Build (after ./build.sh made src/DiffKeeper.Native/obj/bpf/diffkeeper.lskel.h; needs libsqlite3-dev):
//   gcc -O2 -I src/DiffKeeper.Native/obj/bpf -o floor bench/ebpf-floor/floor.c -lbpf -lsqlite3 -l:libcrypto.so.3
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <bpf/libbpf.h>
#include <bpf/bpf.h>
#include <sqlite3.h>
#include "diffkeeper.lskel.h"

unsigned char *SHA256(const unsigned char *d, size_t n, unsigned char *md);

struct dk_event {
	uint64_t time_ns, ino, offset, length;
	uint32_t dev, pid, tgid;
	uint16_t kind, flags, path_len, str_len;
	uint32_t payload_len;
	char comm[16];
	uint64_t mode;
};
_Static_assert(sizeof(struct dk_event) == 80, "hdr");

static int mode; // 0 none, 1 log, 2 rows, 3 rows without secondary indexes, 4 event rows only
static long records, bytes;
static int logfd = -1, packfd = -1;
static char *logbuf; static size_t loglen;
static sqlite3 *db;
static sqlite3_stmt *ins_path, *ins_event, *ins_version, *ins_blob;
static long seq, packoff;
static uint64_t last_commit;
#define NINO 65536
static uint64_t ino_key[NINO]; static long ino_path[NINO];

static uint64_t now_ns(void) { struct timespec t; clock_gettime(CLOCK_MONOTONIC, &t); return t.tv_sec * 1000000000ull + t.tv_nsec; }

static void ex(const char *sql) { char *e = NULL; if (sqlite3_exec(db, sql, NULL, NULL, &e) != SQLITE_OK) { fprintf(stderr, "%s: %s\n", sql, e); exit(1); } }
static sqlite3_stmt *prep(const char *sql) { sqlite3_stmt *s; if (sqlite3_prepare_v2(db, sql, -1, &s, NULL) != SQLITE_OK) { fprintf(stderr, "%s: %s\n", sql, sqlite3_errmsg(db)); exit(1); } return s; }
static void run(sqlite3_stmt *s) { int rc = sqlite3_step(s); if (rc != SQLITE_DONE) { fprintf(stderr, "step %d %s\n", rc, sqlite3_errmsg(db)); exit(1); } sqlite3_reset(s); }

static void flushlog(void) { if (loglen) { if (write(logfd, logbuf, loglen) != (ssize_t)loglen) exit(1); loglen = 0; } }

static void commit(void)
{
	flushlog(); // the pack's group
	ex("COMMIT");
	fdatasync(packfd);
	ex("BEGIN");
	last_commit = now_ns();
}

static long *slot(uint64_t ino) { size_t i = (ino * 0x9E3779B97F4A7C15ull) >> 48; while (ino_key[i] && ino_key[i] != ino) i = (i + 1) & (NINO - 1); ino_key[i] = ino; return &ino_path[i]; }

static int on_record(void *ctx, void *data, size_t size)
{
	(void)ctx;
	records++; bytes += size;
	if (mode == 0) return 0;
	if (mode == 1) {
		if (loglen + size > (1 << 20)) flushlog();
		memcpy(logbuf + loglen, data, size); loglen += size;
		return 0;
	}
	const struct dk_event *e = data;
	const char *path = (const char *)data + sizeof *e;
	long *pid = slot(e->ino);
	if (e->path_len) {
		const char *slash = memrchr(path, '/', e->path_len);
		const char *rel = slash ? slash + 1 : path;
		int rl = (int)(path + e->path_len - rel); while (rl && rel[rl - 1] == 0) rl--;
		sqlite3_bind_int64(ins_path, 1, 1); sqlite3_bind_text(ins_path, 2, rel, rl, SQLITE_STATIC);
		run(ins_path);
		*pid = sqlite3_last_insert_rowid(db);
	}
	int op = e->kind == 2 ? 2 : 1;
	seq++;
	if (mode == 4) {
		sqlite3_bind_int64(ins_event, 1, 1); sqlite3_bind_int64(ins_event, 2, seq); sqlite3_bind_int64(ins_event, 3, e->time_ns);
		sqlite3_bind_int64(ins_event, 4, op); sqlite3_bind_int64(ins_event, 5, (long)e->ino); sqlite3_bind_int64(ins_event, 6, e->kind == 2 ? e->length : 0);
		sqlite3_bind_int64(ins_event, 7, e->tgid); sqlite3_bind_text(ins_event, 8, e->comm, strnlen(e->comm, 16), SQLITE_STATIC);
		sqlite3_bind_null(ins_event, 9); sqlite3_bind_null(ins_event, 10);
		run(ins_event);
		if (loglen + size > (1 << 20)) flushlog();
		memcpy(logbuf + loglen, data, size); loglen += size; // path and payload to the log beside it
		if (now_ns() - last_commit > 200000000ull) commit();
		return 0;
	}
	sqlite3_bind_int64(ins_event, 1, 1); sqlite3_bind_int64(ins_event, 2, seq); sqlite3_bind_int64(ins_event, 3, e->time_ns);
	sqlite3_bind_int64(ins_event, 4, op); sqlite3_bind_int64(ins_event, 5, *pid); sqlite3_bind_int64(ins_event, 6, e->kind == 2 ? e->length : 0);
	sqlite3_bind_int64(ins_event, 7, e->tgid); sqlite3_bind_text(ins_event, 8, e->comm, strnlen(e->comm, 16), SQLITE_STATIC);
	if (op == 2) { sqlite3_bind_int64(ins_event, 9, e->offset); sqlite3_bind_int64(ins_event, 10, e->length); }
	else { sqlite3_bind_null(ins_event, 9); sqlite3_bind_null(ins_event, 10); }
	run(ins_event);
	unsigned char h[32] = {0};
	if (op == 2 && e->payload_len) {
		const unsigned char *p = (const unsigned char *)data + sizeof *e + e->path_len + e->str_len;
		SHA256(p, e->payload_len, h);
		sqlite3_bind_blob(ins_blob, 1, h, 32, SQLITE_STATIC); sqlite3_bind_int64(ins_blob, 2, -1); sqlite3_bind_int64(ins_blob, 3, packoff);
		sqlite3_bind_int64(ins_blob, 4, e->payload_len); sqlite3_bind_int64(ins_blob, 5, 0); sqlite3_bind_int64(ins_blob, 6, 5);
		run(ins_blob);
		if (loglen + e->payload_len > (1 << 20)) flushlog();
		memcpy(logbuf + loglen, p, e->payload_len); loglen += e->payload_len; packoff += e->payload_len;
	}
	sqlite3_bind_int64(ins_version, 1, 1); sqlite3_bind_int64(ins_version, 2, *pid); sqlite3_bind_int64(ins_version, 3, seq);
	sqlite3_bind_int64(ins_version, 4, e->time_ns); sqlite3_bind_int64(ins_version, 5, e->mode & 07777);
	sqlite3_bind_int64(ins_version, 6, e->time_ns); sqlite3_bind_int64(ins_version, 7, op == 2 ? e->length : 0);
	sqlite3_bind_blob(ins_version, 8, h, 32, SQLITE_STATIC);
	run(ins_version);
	if (now_ns() - last_commit > 200000000ull) commit();
	return 0;
}

int main(int argc, char **argv)
{
	if (argc < 5 || strcmp(argv[3], "--")) { fprintf(stderr, "usage: floor none|log|rows DIR -- CMD...\n"); return 2; }
	mode = !strcmp(argv[1], "none") ? 0 : !strcmp(argv[1], "log") ? 1 : !strcmp(argv[1], "rows") ? 2 : !strcmp(argv[1], "rows-noindex") ? 3 : 4;
	char p[4096];
	if (mode >= 1) {
		logbuf = malloc(1 << 20);
		snprintf(p, sizeof p, "%s/%s", argv[2], mode == 1 ? "log" : "pack");
		logfd = packfd = open(p, O_WRONLY | O_CREAT | O_TRUNC | O_APPEND, 0644);
		if (logfd < 0) { perror(p); return 1; }
	}
	if (getenv("FLOOR_NOMEMSTATUS")) sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
	if (mode >= 2) {
		snprintf(p, sizeof p, "%s/catalog.db", argv[2]);
		if (sqlite3_open_v2(p, &db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, NULL)) return 1;
		ex("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;");
		ex("CREATE TABLE paths(id INTEGER PRIMARY KEY, root_id INTEGER NOT NULL, rel TEXT NOT NULL, UNIQUE(root_id, rel));"
		   "CREATE TABLE events(session_id INTEGER NOT NULL, seq INTEGER NOT NULL, time_ns INTEGER NOT NULL, op INTEGER NOT NULL, path_id INTEGER, path2_id INTEGER, size INTEGER, pid INTEGER, comm TEXT, detail TEXT, offset INTEGER, length INTEGER, run BLOB, PRIMARY KEY(session_id, seq)) WITHOUT ROWID;"
		   "CREATE TABLE versions(id INTEGER PRIMARY KEY, session_id INTEGER NOT NULL, path_id INTEGER NOT NULL, seq INTEGER NOT NULL, time_ns INTEGER NOT NULL, kind INTEGER NOT NULL, mode INTEGER NOT NULL, uid INTEGER NOT NULL, gid INTEGER NOT NULL, mtime_ns INTEGER NOT NULL, size INTEGER NOT NULL, content BLOB, target TEXT, extents BLOB, pruned INTEGER NOT NULL DEFAULT 0, link INTEGER);"
		   "CREATE TABLE blobs(id INTEGER PRIMARY KEY, hash BLOB NOT NULL, pack_id INTEGER NOT NULL, offset INTEGER NOT NULL, raw_len INTEGER NOT NULL, stored_len INTEGER NOT NULL, codec INTEGER NOT NULL, bases BLOB);");
		if (mode == 2) ex("CREATE INDEX versions_by_session ON versions(session_id, seq); CREATE INDEX versions_by_path ON versions(path_id, seq); CREATE UNIQUE INDEX blobs_hash ON blobs(hash);");
		ins_path = prep("INSERT INTO paths(root_id, rel) VALUES(?1, ?2)");
		ins_event = prep("INSERT INTO events(session_id, seq, time_ns, op, path_id, size, pid, comm, offset, length) VALUES(?1,?2,?3,?4,?5,?6,?7,?8,?9,?10)");
		ins_version = prep("INSERT INTO versions(session_id, path_id, seq, time_ns, kind, mode, uid, gid, mtime_ns, size, content) VALUES(?1,?2,?3,?4,1,?5,0,0,?6,?7,?8)");
		ins_blob = prep("INSERT OR IGNORE INTO blobs(hash, pack_id, offset, raw_len, stored_len, codec) VALUES(?1,?2,?3,?4,?5,?6)");
		ex("BEGIN");
		last_commit = now_ns();
	}
	uint64_t t0 = now_ns();
	struct diffkeeper *skel = diffkeeper__open();
	if (!skel) return 1;
	skel->maps.events.max_entries = 64 << 20;
	skel->maps.scratch.max_entries = libbpf_num_possible_cpus();
	if (diffkeeper__load(skel)) { perror("load"); return 1; }
	uint32_t zero = 0, settings[2] = { 256 * 1024, 256 * 1024 };
	if (bpf_map_update_elem(skel->maps.settings.map_fd, &zero, settings, BPF_ANY)) { perror("settings"); return 1; }
	uint32_t self = getpid(); uint8_t prop = 2;
	if (bpf_map_update_elem(skel->maps.tracked.map_fd, &self, &prop, BPF_ANY)) { perror("tracked"); return 1; }
	if (diffkeeper__attach(skel)) { perror("attach"); return 1; }
	struct ring_buffer *rb = ring_buffer__new(skel->maps.events.map_fd, on_record, NULL, NULL);
	if (!rb) { perror("ring"); return 1; }
	uint64_t t1 = now_ns();
	pid_t child = fork();
	if (child == 0) { execvp(argv[4], argv + 4); _exit(127); }
	int status = 0;
	for (;;) {
		ring_buffer__poll(rb, 10);
		if (waitpid(child, &status, WNOHANG) == child) break;
	}
	ring_buffer__consume(rb);
	if (mode >= 2) commit();
	else if (mode == 1) { flushlog(); fdatasync(logfd); }
	uint64_t t2 = now_ns();
	struct rusage self_ru, kids;
	getrusage(RUSAGE_SELF, &self_ru); getrusage(RUSAGE_CHILDREN, &kids);
	fprintf(stderr, "floor %s: %ld records, %ld bytes; start %.1f ms, run %.1f ms; self cpu %.1f ms (user %.1f sys %.1f), command cpu %.1f ms\n",
		argv[1], records, bytes, (t1 - t0) / 1e6, (t2 - t1) / 1e6,
		(self_ru.ru_utime.tv_sec + self_ru.ru_stime.tv_sec) * 1e3 + (self_ru.ru_utime.tv_usec + self_ru.ru_stime.tv_usec) / 1e3,
		self_ru.ru_utime.tv_sec * 1e3 + self_ru.ru_utime.tv_usec / 1e3, self_ru.ru_stime.tv_sec * 1e3 + self_ru.ru_stime.tv_usec / 1e3,
		(kids.ru_utime.tv_sec + kids.ru_stime.tv_sec) * 1e3 + (kids.ru_utime.tv_usec + kids.ru_stime.tv_usec) / 1e3);
	ring_buffer__free(rb);
	diffkeeper__destroy(skel);
	if (db) sqlite3_close(db);
	return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
