// SPDX-License-Identifier: GPL-2.0
// DiffKeeper's kernel-side recorder: syscall tracepoints (tp_btf/sys_enter, sys_exit) and the scheduler's fork
// and exit tracepoints. fentry/LSM are refused by some kernels' policy, so everything here is a tracepoint.
//
// Only processes in `tracked` (the recorded process tree) cost more than one hash lookup. An event is one ring
// buffer record: a struct dk_event header, then `path_len` bytes of an absolute kernel path (walked from a dentry
// and mount), then `str_len` bytes of a user path string (relative to that path unless it starts with '/'), then
// `payload_len` bytes of written data. The layout is mirrored in src/DiffKeeper.Capture/Ebpf/EbpfRecord.cs.
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

// Turns a kernel address the program holds as a number into a typed pointer the program can load fields from
// directly (plain loads the kernel guards against faults) instead of one bpf_probe_read_kernel call per field.
extern void *bpf_rdonly_cast(const void *obj, __u32 btf_id) __ksym;
#define KERNEL_PTR(type, addr) ((type *)bpf_rdonly_cast((const void *)(addr), bpf_core_type_id_kernel(type)))

// The current task, typed but untrusted (bpf_get_current_task_btf's pointer is trusted). For each pointer field
// loaded through a trusted pointer (task->files, task->fs) the verifier looks up to four type names
// ("task_struct__safe_trusted", ...) by a linear scan of the kernel's ~125,000 BTF types: at every load of the
// programs, ~20% of the load's time (perf, docs/benchmarks.md, branch ebpfls). Loads through an untrusted pointer
// are fault-guarded and need no lookup.
#define CURRENT_TASK() KERNEL_PTR(struct task_struct, bpf_get_current_task())

// A user path string is at most PATH_MAX (the kernel refuses longer ones). A path walked from a dentry can be
// longer (a tree made with mkdirat relative to directory descriptors): up to 16 KiB of it are sent; a longer one
// is cut and flagged F_PATH_TRUNCATED (user space then rescans).
#define PATH_MAX_BYTES 4096
#define KPATH_MAX_BYTES 16384
#define KPATH_MASK 0x3fff
#define PAYLOAD_MAX_BYTES (256 * 1024)
#define HDR_SIZE 80
#define PATH_END (HDR_SIZE + KPATH_MAX_BYTES)
// Room for any start offset the verifier can prove (masked to 15 bits) plus the largest record.
#define SCRATCH_SIZE (32768 + HDR_SIZE + KPATH_MAX_BYTES + PAYLOAD_MAX_BYTES)

#define AT_FDCWD_INT (-100)
#define O_ACCMODE_BITS 3
#define O_CREAT_BIT 0x40
#define O_TRUNC_BIT 0x200
#define O_APPEND_BIT 0x400
#define RWF_APPEND_BIT 0x10
#define AT_REMOVEDIR_BIT 0x200
#define RENAME_EXCHANGE_BIT 2
#define FMODE_CREATED_BIT 0x100000
#define FMODE_WRITE_BIT 0x2
#define MAP_SHARED_BIT 0x1
#define FICLONE_CMD 0x40049409
#define FICLONERANGE_CMD 0x4020940d
#define FIDEDUPERANGE_CMD 0xc0189436
#define S_IFMT_BITS 0170000
#define S_IFREG_BITS 0100000

// Event kinds (EbpfRecordKind in C#).
#define K_OPEN 1
#define K_WRITE 2
#define K_TRUNCATE 3
#define K_UNLINK 4
#define K_RMDIR 5
#define K_MKDIR 6
#define K_RENAME_FROM 7
#define K_RENAME_TO 8
#define K_LINK 9
#define K_SYMLINK 10
#define K_CHMOD 11
#define K_CHANGED 12
#define K_SYMLINK_TARGET 13 // the user string is a new symlink's target; the K_SYMLINK of the same thread follows
#define K_LINK_FROM 14 // the existing name of a hard link; the K_LINK (the new name) of the same thread follows
#define K_COPY 15 // copy_file_range, sendfile: `length` bytes at `offset` are another file's range (the payload, a dk_copy_src)

// Flags (EbpfRecordFlags in C#).
#define F_CREATED 1
#define F_TRUNCATED 2
#define F_READBACK 4
#define F_EXCHANGE 8
#define F_PATH_TRUNCATED 16
#define F_FALLOCATE 32 // a K_CHANGED from fallocate: its mode argument is in the flags' high byte
#define F_SIZED 64 // a K_COPY whose length is the source's size at the syscall's exit (a clone to the source's end)

// Values of `tracked`.
#define T_RECORD 1
#define T_PROPAGATE 2

struct dk_event {
	__u64 time_ns;
	__u64 ino;
	__u64 offset; // write offset, new length (truncate), mode (chmod, mkdir)
	__u64 length; // bytes the syscall wrote
	__u32 dev;
	__u32 pid;
	__u32 tgid;
	__u16 kind;
	__u16 flags;
	__u16 path_len;
	__u16 str_len;
	__u32 payload_len;
	char comm[16];
	__u64 mode; // fd-based events: the file's i_mode after the syscall (its mode as created, or as fchmod set it); else 0
};
_Static_assert(sizeof(struct dk_event) == HDR_SIZE, "header size is mirrored in C#");

struct dk_config {
	__u32 max_payload;
	__u32 wake_bytes;
};

struct dk_args {
	__u64 id;
	__u64 a[6];
};

// Per-CPU working memory. The path walk keeps its state here rather than on the stack: values in map memory
// are not tracked precisely by the verifier, so the walk's loop is verified in a few passes, not once per step.
struct dk_scratch {
	__u64 walk_dentry;
	__u64 walk_mount;
	__u32 walk_len;
	__u32 walk_cut;
	// The open file this CPU last sent an event for, and its inode: a hit spares the `announced` lookup.
	__u64 last_file;
	__u64 last_ino;
	// The last process this CPU found recorded in `tracked`, with the value of `tracked_gen` read before that
	// lookup: (generation << 32) | 1 << 31 | tgid, stored in one go. A hit spares the hash lookup (see recorded()).
	__u64 tracked_hit;
	// Record bytes this CPU submitted since it last asked the ring how much is pending, and whether the answer was
	// at least wake_bytes (see wake_flags()).
	__u64 since_query;
	__u64 was_above;
	// A vectored write being gathered (dk_emit_filev, vec_step): the user's iovec array and count, the bytes
	// written, the vector being read (index, next address, bytes left of it) and the bytes gathered so far.
	__u64 vec_iov;
	__u64 vec_cnt;
	__u64 vec_len;
	__u64 vec_idx;
	__u64 vec_base;
	__u64 vec_left;
	__u64 vec_done;
	char buf[SCRATCH_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 64 * 1024 * 1024);
} events SEC(".maps");

// Not preallocated: 65,536 preallocated elements cost ~10 ms of BPF_MAP_CREATE at every start, and only a fork or
// an exit of a tracked process updates the map (every syscall only looks up, which costs the same either way).
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__uint(map_flags, BPF_F_NO_PREALLOC);
	__type(key, __u32);
	__type(value, __u8);
} tracked SEC(".maps");

// Counts the deletions from `tracked` (a recorded process exited). A per-CPU cached "this tgid is recorded" is
// valid only while the count is the one read before the lookup that filled it: a tgid freed and reused by an
// unrecorded process is never taken for recorded. Additions need no count: only recorded answers are cached.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} tracked_gen SEC(".maps");

// struct file pointer -> inode number whose path was already sent with an event. An LRU map is always preallocated
// (65,536 entries cost ~10 ms of BPF_MAP_CREATE at every start); 16,384 open files written in turn is plenty, and an
// evicted file only sends its path again with its next event.
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, __u64);
	__type(value, __u64);
} announced SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} drops SEC(".maps");

// How many times a recorded process opened a way of writing files that no event of this program describes: a
// shared mapping of a file opened for writing (mmap; its writes are stores to memory), an io_uring or an AIO
// context (their writes run in the kernel, not in a syscall). User space reads it at each keep-mode cut: while it
// is 0, the write events of a file are every byte written to it by the recorded tree.
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, __u64);
} unseen SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dk_config);
} settings SEC(".maps");

// One entry per possible CPU (user space sets max_entries before loading).
struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct dk_scratch);
} scratch SEC(".maps");

static __always_inline struct dk_scratch *my_scratch(void)
{
	__u32 cpu = bpf_get_smp_processor_id();
	return bpf_map_lookup_elem(&scratch, &cpu);
}

// One step of the path walk (bpf_loop callback): one name, or one hop from a mount's root to its mountpoint.
static long walk_step(__u32 index, void *ctx)
{
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 1;
	struct dentry *d = KERNEL_PTR(struct dentry, s->walk_dentry);
	struct mount *mnt = KERNEL_PTR(struct mount, s->walk_mount);
	struct dentry *parent = d->d_parent;
	if (d == mnt->mnt.mnt_root || d == parent) {
		struct mount *up = mnt->mnt_parent;
		if (up == mnt || !up)
			return 1;
		s->walk_dentry = (__u64)mnt->mnt_mountpoint;
		s->walk_mount = (__u64)up;
		return 0;
	}
	__u32 nlen = d->d_name.len;
	const unsigned char *name = d->d_name.name;
	if (nlen > 255)
		nlen = 255;
	__u32 len = s->walk_len;
	if (len > KPATH_MAX_BYTES || len + nlen + 1 > KPATH_MAX_BYTES - 1) {
		s->walk_cut = 1;
		return 1;
	}
	__u32 off = PATH_END - len - nlen;
	barrier_var(off);
	off &= 0x7fff;
	bpf_probe_read_kernel(&s->buf[off], nlen & 255, name);
	off = PATH_END - len - nlen - 1;
	barrier_var(off);
	off &= 0x7fff;
	s->buf[off] = '/';
	s->walk_len = len + nlen + 1;
	s->walk_dentry = (__u64)parent;
	return 0;
}

// Writes the absolute path of the dentry and vfsmount put in this CPU's scratch (walk_dentry, walk_mount) backwards
// so that it ends at PATH_END of its buffer; returns its length (bit 15 set when it was cut short). A global
// function: verified once, on its own. (Its arguments go through the scratch because a global function takes
// only numbers, and the callers hold typed pointers.)
__noinline int dk_walk_path(void)
{
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 0;
	s->walk_mount -= bpf_core_field_offset(struct mount, mnt);
	s->walk_len = 0;
	s->walk_cut = 0;
	// Out of steps before the top (a path of more than 1024 names): as cut as one too long.
	if (bpf_loop(1024, walk_step, NULL, 0) >= 1024)
		s->walk_cut = 1;
	__u32 len = s->walk_len & KPATH_MASK;
	if (len == 0) {
		s->buf[PATH_END - 1] = '/';
		len = 1;
	}
	if (s->walk_cut)
		len |= 0x8000;
	return len;
}

static __always_inline __u32 walk_path(struct dentry *dentry, struct vfsmount *mnt)
{
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 0;
	s->walk_dentry = (__u64)dentry;
	s->walk_mount = (__u64)mnt;
	return (__u32)dk_walk_path();
}

static __always_inline struct file *fd_file(struct task_struct *task, int fd)
{
	if (fd < 0)
		return NULL;
	struct fdtable *fdt = task->files->fdt;
	if ((unsigned int)fd >= fdt->max_fds)
		return NULL;
	// fdt->fd is an array of pointers, which BTF cannot type: one read, then a typed pointer again
	struct file *f = NULL;
	bpf_probe_read_kernel(&f, sizeof(f), &fdt->fd[fd]);
	if (!f)
		return NULL;
	return KERNEL_PTR(struct file, f);
}

static __always_inline __u32 walk_file(struct file *f)
{
	return walk_path(f->f_path.dentry, f->f_path.mnt);
}

// The directory a *at() call resolves a relative name against: the cwd for AT_FDCWD, else the dirfd's file.
static __always_inline __u32 walk_base(struct task_struct *task, int dirfd)
{
	if (dirfd == AT_FDCWD_INT) {
		struct fs_struct *fs = task->fs;
		return walk_path(fs->pwd.dentry, fs->pwd.mnt);
	}
	struct file *f = fd_file(task, dirfd);
	if (!f)
		return 0;
	return walk_file(f);
}

static __always_inline void fill_header(struct dk_event *e, __u16 kind)
{
	__u64 pid_tgid = bpf_get_current_pid_tgid();
	e->time_ns = bpf_ktime_get_ns();
	e->pid = (__u32)pid_tgid;
	e->tgid = pid_tgid >> 32;
	e->kind = kind;
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline void count_drop(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&drops, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

// Wakes the reader when the pending data has crossed wake_bytes since this CPU last looked (it also polls on a
// timer). Not on every record once past it: while the reader is behind, a forced wakeup per record (an irq_work
// each) cost the writing process microseconds per syscall, several times the rest of the program. Each CPU asks
// the ring once per wake_bytes / 8 it submitted, not per record: the query was ~5% of the program's time in a write
// storm, and a wakeup is only latency (the reader's 10 ms poll reads whatever a late one leaves).
static __always_inline __u64 wake_flags(__u64 size)
{
	__u32 zero = 0;
	struct dk_config *c = bpf_map_lookup_elem(&settings, &zero);
	__u64 wake = c ? c->wake_bytes : 0;
	if (wake == 0)
		return BPF_RB_FORCE_WAKEUP;
	struct dk_scratch *s = my_scratch();
	if (!s)
		return BPF_RB_NO_WAKEUP;
	s->since_query += size;
	if (s->since_query < wake / 8)
		return BPF_RB_NO_WAKEUP;
	s->since_query = 0;
	__u64 pending = bpf_ringbuf_query(&events, BPF_RB_AVAIL_DATA) + size;
	__u64 was_above = s->was_above;
	s->was_above = pending >= wake;
	if (pending >= wake && !was_above)
		return BPF_RB_FORCE_WAKEUP;
	return BPF_RB_NO_WAKEUP;
}

// Puts the header before the path (which ends at PATH_END) and sends header, path and the `tail` bytes after
// PATH_END as one record.
static __always_inline void submit(struct dk_scratch *s, struct dk_event *e, __u32 path_len, __u32 tail)
{
	if (path_len & 0x8000) {
		e->flags |= F_PATH_TRUNCATED;
		path_len &= 0x7fff;
	}
	path_len &= KPATH_MASK;
	if (tail > PAYLOAD_MAX_BYTES)
		return;
	e->path_len = path_len;
	__u32 start = PATH_END - HDR_SIZE - path_len;
	barrier_var(start); // keep the mask below: the verifier needs it, the compiler thinks it redundant
	start &= 0x7fff;
	bpf_probe_read_kernel(&s->buf[start], HDR_SIZE, e);
	__u32 size = HDR_SIZE + path_len + tail;
	// bpf_ringbuf_output reserves after this query: the record is not pending yet
	if (bpf_ringbuf_output(&events, &s->buf[start], size, wake_flags(size)) != 0)
		count_drop();
}

// The common case of an open file whose path was already sent (a write, a truncate, an fchmod): header and up to
// `cap` bytes of payload are reserved in the ring and the payload is read from the user's buffer straight into
// it (one copy, no path). `cap` is a constant per call site (the verifier needs a constant size); the record may be
// longer than header + payload_len, and the reader goes by payload_len.
static __noinline void submit_direct(struct dk_event *e, __u64 ubuf, __u64 n, __u64 cap)
{
	__u64 flags = wake_flags(HDR_SIZE + cap); // asked before the reservation, which counts as pending
	char *r = bpf_ringbuf_reserve(&events, HDR_SIZE + cap, 0);
	if (!r) {
		count_drop();
		return;
	}
	barrier_var(n); // the compiler knows every caller's n <= cap and would drop the check the verifier needs
	if (cap > 0 && n > 0) {
		if (n > cap)
			n = cap;
		barrier_var(n);
		if (bpf_probe_read_user(r + HDR_SIZE, n, (const void *)ubuf) == 0) {
			e->payload_len = n;
		} else {
			e->flags |= F_READBACK;
		}
	}
	__builtin_memcpy(r, e, HDR_SIZE);
	bpf_ringbuf_submit(r, flags);
}

// Record sizes of submit_direct: 16 bytes (a line of a log), then powers of two from 64 bytes to the largest
// payload: at most twice the ring space a record needs.
static __always_inline void submit_payload(struct dk_event *e, __u64 ubuf, __u32 n)
{
	if (n == 0)
		submit_direct(e, 0, 0, 0);
	else if (n <= 16)
		submit_direct(e, ubuf, n, 16);
	else if (n <= 64)
		submit_direct(e, ubuf, n, 64);
	else if (n <= 256)
		submit_direct(e, ubuf, n, 256);
	else if (n <= 1024)
		submit_direct(e, ubuf, n, 1024);
	else if (n <= 4096)
		submit_direct(e, ubuf, n, 4096);
	else if (n <= 8192)
		submit_direct(e, ubuf, n, 8192);
	else if (n <= 16384)
		submit_direct(e, ubuf, n, 16384);
	else if (n <= 32768)
		submit_direct(e, ubuf, n, 32768);
	else if (n <= 65536)
		submit_direct(e, ubuf, n, 65536);
	else if (n <= 131072)
		submit_direct(e, ubuf, n, 131072);
	else
		submit_direct(e, ubuf, n, PAYLOAD_MAX_BYTES);
}

// Reads a user path string to PATH_END; returns its length without the NUL (0 on failure).
static __always_inline __u32 read_user_str(struct dk_scratch *s, __u64 uptr)
{
	long n = bpf_probe_read_user_str(&s->buf[PATH_END], PATH_MAX_BYTES, (const void *)uptr);
	if (n <= 1)
		return 0;
	return (__u32)(n - 1);
}

// A namespace operation: base directory (for relative names) plus the user's path string.
// The mode mkdir gives a directory: the mode asked for (01777 of it) less the process's umask (no default ACL).
static __always_inline __u64 mkdir_mode(struct task_struct *task, __u64 mode)
{
	__u32 umask = task->fs->umask;
	return mode & 01777 & ~(__u64)umask;
}

// The emitters below are global functions: the verifier checks each once, on its own, with unknown arguments.
// Inlined at their ~40 call sites they were checked once per site (walks, field loads and the payload ladder
// each time): 16,592 instructions processed and ~80 ms of BPF_PROG_LOAD, the largest part of starting `record`.
// A global function takes only numbers, so the current task is looked up inside and kind and flags travel packed.
#define EMIT_WHAT(kind, flags) ((__u32)(kind) | ((__u32)(flags) << 16))
#define EMIT_FPOS (1u << 8) // emit_file: the offset is the file position after the write less its length

__noinline int dk_emit_named(__u32 what, int dirfd, __u64 uptr, __u64 value)
{
	struct task_struct *task = CURRENT_TASK();
	__u16 kind = what & 0xff;
	__u16 flags = what >> 16;
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 0;
	struct dk_event e = {};
	fill_header(&e, kind);
	e.flags = flags;
	e.offset = value;
	__u32 slen = read_user_str(s, uptr);
	if (slen == 0)
		return 0;
	e.str_len = slen;
	__u32 plen = 0;
	if (s->buf[PATH_END] != '/')
		plen = walk_base(task, dirfd);
	// the walk wrote below PATH_END only, the string above it is intact
	submit(s, &e, plen, slen & (PATH_MAX_BYTES - 1));
	return 0;
}

static __always_inline void emit_named(__u16 kind, __u16 flags, int dirfd, __u64 uptr, __u64 value)
{
	dk_emit_named(EMIT_WHAT(kind, flags), dirfd, uptr, value);
}

static __always_inline int is_regular(struct inode *inode)
{
	__u16 mode = inode->i_mode;
	return (mode & S_IFMT_BITS) == S_IFREG_BITS;
}

// The open regular file fd names, with the event's header filled in for it (the offset: the file position after
// the change less its length when use_fpos); NULL when no event is sent for it.
static __always_inline struct file *file_event(struct dk_event *e, __u16 kind, int fd, __u64 offset, __u64 length, int use_fpos)
{
	struct file *f = fd_file(CURRENT_TASK(), fd);
	if (!f)
		return NULL;
	struct inode *inode = f->f_inode;
	if (!inode || !is_regular(inode))
		return NULL;
	if (inode->__i_nlink == 0)
		return NULL; // written after it was deleted: no path shows it any more
	fill_header(e, kind);
	e->ino = inode->i_ino;
	e->dev = inode->i_sb->s_dev;
	e->mode = inode->i_mode;
	e->length = length;
	e->offset = use_fpos ? f->f_pos - length : offset;
	return f;
}

// The most payload bytes a record may carry (--max-payload).
static __always_inline __u64 max_payload(void)
{
	__u32 zero = 0;
	struct dk_config *c = bpf_map_lookup_elem(&settings, &zero);
	return c ? c->max_payload : 0;
}

// Whether an open file's path went with an earlier event (this CPU's last file, else `announced`); a hit found in
// `announced` becomes this CPU's last file.
static __always_inline int path_sent(struct dk_scratch *s, __u64 key, __u64 ino)
{
	if (s->last_file == key && s->last_ino == ino)
		return 1;
	__u64 *seen = bpf_map_lookup_elem(&announced, &key);
	if (!seen || *seen != ino)
		return 0;
	s->last_file = key;
	s->last_ino = ino;
	return 1;
}

// The first event of an open file: its path goes with it, written to end at PATH_END. Returns the path's length.
static __always_inline __u32 send_path(struct dk_scratch *s, struct file *f, __u64 key, __u64 *ino)
{
	__u32 plen = walk_file(f);
	bpf_map_update_elem(&announced, &key, ino, BPF_ANY);
	s->last_file = key;
	s->last_ino = *ino;
	return plen;
}

// An fd-based change of a regular file. With a user buffer, copies up to max_payload bytes of it.
__noinline int dk_emit_file(__u32 what, int fd, __u64 offset, __u64 length, __u64 ubuf)
{
	__u16 kind = what & 0xff;
	struct dk_event e = {};
	struct file *f = file_event(&e, kind, fd, offset, length, (what & EMIT_FPOS) != 0);
	if (!f)
		return 0;
	e.flags = what >> 16;
	if (kind == K_WRITE && !(what & EMIT_FPOS) && (f->f_flags & O_APPEND_BIT)) {
		// pwrite on an O_APPEND file writes at its end whatever the offset says (pwrite(2), BUGS): read it back
		e.flags |= F_READBACK;
		ubuf = 0;
	}
	__u32 n = 0;
	if (ubuf) {
		if (length <= max_payload() && length <= PAYLOAD_MAX_BYTES)
			n = (__u32)length;
		else
			e.flags |= F_READBACK;
	}
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 0;
	__u64 key = (__u64)f;
	if (kind != K_OPEN && path_sent(s, key, e.ino)) {
		submit_payload(&e, ubuf, n);
		return 0;
	}
	__u32 plen = send_path(s, f, key, &e.ino);
	__u32 tail = 0;
	if (n > 0) {
		if (n > PAYLOAD_MAX_BYTES)
			n = PAYLOAD_MAX_BYTES;
		if (bpf_probe_read_user(&s->buf[PATH_END], n, (const void *)ubuf) == 0) {
			tail = n;
			e.payload_len = n;
		} else {
			e.flags |= F_READBACK;
		}
	}
	submit(s, &e, plen, tail);
	return 0;
}

// writev, pwritev, pwritev2: the vectors' bytes are gathered into the scratch buffer after PATH_END, so the record
// is a write's (offset, length and payload) and the recorder applies it to its copy as one: `#seq` of a vectored
// write is exact like a write's, within the same payload cap. Each step reads at most WRITEV_CHUNK bytes, so the
// verifier's bound (the offset's largest value plus the size's) stays inside the scratch buffer's slack; one step
// ends a vector or reads a whole chunk, so WRITEV_STEPS covers WRITEV_VECS vectors of up to PAYLOAD_MAX_BYTES in
// all. Beyond that, or when a vector cannot be read, the record says F_READBACK and the recorder reads the file.
#define WRITEV_VECS 16
#define WRITEV_CHUNK 32768
#define WRITEV_STEPS (2 * WRITEV_VECS + PAYLOAD_MAX_BYTES / WRITEV_CHUNK)

struct dk_iovec {
	__u64 base;
	__u64 len;
};

// One step of gathering a vectored write (bpf_loop callback, verified once): the next vector's address and length,
// or up to WRITEV_CHUNK of the current vector's bytes. Its state is in the scratch; returns 1 to stop.
static long vec_step(__u32 index, void *ctx)
{
	struct dk_scratch *s = my_scratch();
	if (!s || s->vec_done >= s->vec_len)
		return 1;
	if (s->vec_left == 0) {
		if (s->vec_idx >= s->vec_cnt || s->vec_idx >= WRITEV_VECS)
			return 1;
		struct dk_iovec v;
		if (bpf_probe_read_user(&v, sizeof(v), (const void *)(s->vec_iov + s->vec_idx * sizeof(v))) != 0)
			return 1;
		s->vec_idx++;
		s->vec_base = v.base;
		s->vec_left = v.len;
		if (v.len == 0)
			return 0;
	}
	__u64 done = s->vec_done;
	__u64 take = s->vec_len - done;
	if (take > s->vec_left)
		take = s->vec_left;
	if (take > WRITEV_CHUNK)
		take = WRITEV_CHUNK;
	barrier_var(done);
	barrier_var(take);
	if (done > PAYLOAD_MAX_BYTES || take > WRITEV_CHUNK)
		return 1;
	if (bpf_probe_read_user(&s->buf[PATH_END + done], take, (const void *)s->vec_base) != 0)
		return 1;
	s->vec_done = done + take;
	s->vec_base += take;
	s->vec_left -= take;
	return 0;
}

// offset -1: the file position (writev; pwritev2's -1). A global function takes at most five arguments.
__noinline int dk_emit_filev(int fd, __u64 offset, __u64 length, __u64 uiov, __u64 iovcnt)
{
	struct dk_event e = {};
	struct file *f = file_event(&e, K_WRITE, fd, offset, length, (long)offset == -1);
	if (!f)
		return 0;
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 0;
	__u64 done = 0;
	// pwritev on an O_APPEND file writes at its end, not at the offset: read back (as pwrite, dk_emit_file)
	int at_offset_of_append = (long)offset != -1 && (f->f_flags & O_APPEND_BIT);
	if (!at_offset_of_append && length <= max_payload() && length <= PAYLOAD_MAX_BYTES && iovcnt <= WRITEV_VECS) {
		s->vec_iov = uiov;
		s->vec_cnt = iovcnt;
		s->vec_len = length;
		s->vec_idx = 0;
		s->vec_base = 0;
		s->vec_left = 0;
		s->vec_done = 0;
		bpf_loop(WRITEV_STEPS, vec_step, NULL, 0);
		done = s->vec_done;
	}
	__u32 tail = 0;
	if (done == length && length > 0 && length <= PAYLOAD_MAX_BYTES) {
		tail = (__u32)length;
		e.payload_len = tail;
	} else {
		e.flags |= F_READBACK;
	}
	__u64 key = (__u64)f;
	__u32 plen = path_sent(s, key, e.ino) ? 0 : send_path(s, f, key, &e.ino); // the path ends where the payload starts
	submit(s, &e, plen, tail);
	return 0;
}

// The source of a K_COPY record, its payload: the range's first byte in the file (device, inode) it was copied from.
struct dk_copy_src {
	__u64 ino;
	__u64 offset;
	__u32 dev;
	__u32 pad;
};

#define COPY_AT (1ull << 63) // dk_emit_copy's offsets: the offset itself (a clone's), not a pointer to it
#define COPY_SIZED (1ull << 62) // with COPY_AT on the source's offset: the length is the source's size at exit (F_SIZED)

// Where a copy's range starts in a file after the syscall moved past it: the user's offset (loff_t *), which the
// kernel advanced by the bytes copied, or the file's position when the pointer is NULL; with COPY_AT, the offset
// given. -1 when unknown.
static __always_inline __s64 copied_from(struct file *f, __u64 uoff, __u64 copied)
{
	if (uoff & COPY_AT)
		return (__s64)(uoff & ~(COPY_AT | COPY_SIZED));
	__s64 end = -1;
	if (uoff == 0)
		end = f->f_pos;
	else if (bpf_probe_read_user(&end, sizeof(end), (const void *)uoff) != 0)
		end = -1;
	return end >= (__s64)copied ? end - (__s64)copied : -1;
}

// copy_file_range and sendfile: the kernel copied `copied` bytes from one file to another, so no user buffer holds
// them. The record names the source range (device, inode, offset) and the recorder takes the bytes from its own copy
// of that file as of this event, so `#seq` of the copy is exact like a write's. F_READBACK (read the file) when the
// source is not a regular file with a name, an offset cannot be read, or the target is O_APPEND (never allowed by
// either call: kept for safety). `out_off`/`in_off`: the user's offset pointers, 0 for the file position.
__noinline int dk_emit_copy(int out_fd, __u64 out_off, int in_fd, __u64 in_off, __u64 copied)
{
	struct dk_event e = {};
	struct file *out = file_event(&e, K_COPY, out_fd, 0, copied, 1);
	if (!out)
		return 0;
	struct dk_scratch *s = my_scratch();
	if (!s)
		return 0;
	if (out_off != 0) {
		__s64 at = copied_from(out, out_off, copied);
		if (at < 0)
			e.flags |= F_READBACK;
		else
			e.offset = at;
	}
	if (in_off & COPY_SIZED)
		e.flags |= F_SIZED;
	struct dk_copy_src src = {};
	struct file *in = fd_file(CURRENT_TASK(), in_fd);
	struct inode *ii = in ? in->f_inode : NULL;
	__s64 from = -1;
	if (ii && is_regular(ii) && ii->__i_nlink > 0)
		from = copied_from(in, in_off, copied);
	if (from < 0 || (out->f_flags & O_APPEND_BIT))
		e.flags |= F_READBACK;
	else {
		src.ino = ii->i_ino;
		src.dev = ii->i_sb->s_dev;
		src.offset = from;
	}
	__u32 tail = 0;
	if (!(e.flags & F_READBACK)) {
		// The payload: the source, then its path (for a file the recorder does not follow, e.g. one outside the
		// watched tree, which it may read if unchanged since the copy). The walk ends at PATH_END, so its path is
		// moved after the source's 24 bytes before the target's path is walked there.
		__u32 slen = walk_file(in);
		if (slen & 0x8000)
			slen = 0; // longer than the walk goes: the source's inode alone
		slen &= KPATH_MASK;
		__u32 from_at = PATH_END - slen;
		barrier_var(from_at);
		from_at &= 0x7fff;
		if (slen > 0)
			bpf_probe_read_kernel(&s->buf[PATH_END + sizeof(src)], slen, &s->buf[from_at]);
		__builtin_memcpy(&s->buf[PATH_END], &src, sizeof(src));
		tail = sizeof(src) + slen;
		e.payload_len = tail;
	}
	__u64 key = (__u64)out;
	__u32 plen = path_sent(s, key, e.ino) ? 0 : send_path(s, out, key, &e.ino); // the path ends where the payload starts
	submit(s, &e, plen, tail);
	return 0;
}

static __always_inline void emit_file(__u16 kind, __u16 flags, int fd, __u64 offset, __u64 length, __u64 ubuf, int use_fpos)
{
	dk_emit_file(EMIT_WHAT(kind, flags) | (use_fpos ? EMIT_FPOS : 0), fd, offset, length, ubuf);
}

struct dk_clone_range {
	__s64 src_fd;
	__u64 src_offset;
	__u64 src_length;
	__u64 dest_offset;
};

// ioctl FICLONE (arg: the source fd; all of it at 0) and FICLONERANGE (arg: struct file_clone_range; a length of 0
// runs to the source's end): a clone reads as a copy of the source's range, so it is sent as one (K_COPY), e.g. `cp`
// on btrfs and xfs, which clones first. Its length is known only from the source's size after the call.
__noinline int dk_emit_clone(int out_fd, __u64 arg, int ranged)
{
	struct dk_clone_range r = {};
	if (ranged) {
		if (bpf_probe_read_user(&r, sizeof(r), (const void *)arg) != 0)
			r.src_fd = -1;
	} else {
		r.src_fd = (int)arg;
	}
	struct file *in = fd_file(CURRENT_TASK(), (int)r.src_fd);
	struct inode *ii = in ? in->f_inode : NULL;
	__s64 size = ii ? ii->i_size : 0;
	__u64 length = r.src_length;
	__u64 sized = 0;
	if (length == 0 && size > (__s64)r.src_offset) {
		length = size - r.src_offset; // the size now: a change of it since the clone is caught by the recorder's ctime check
		sized = COPY_SIZED;
	}
	if (length == 0 || (r.src_offset | r.dest_offset) & (COPY_AT | COPY_SIZED)) {
		emit_file(K_CHANGED, F_READBACK, out_fd, 0, 0, 0, 0); // nothing to say where it came from: read it
		return 0;
	}
	dk_emit_copy(out_fd, r.dest_offset | COPY_AT, (int)r.src_fd, r.src_offset | COPY_AT | sized, length);
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(dk_fork, struct task_struct *parent, struct task_struct *child)
{
	__u32 ptgid = parent->tgid;
	__u32 ctgid = child->tgid;
	if (ptgid == ctgid)
		return 0;
	if (!bpf_map_lookup_elem(&tracked, &ptgid))
		return 0;
	__u8 v = T_RECORD;
	bpf_map_update_elem(&tracked, &ctgid, &v, BPF_ANY);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(dk_exit, struct task_struct *task, bool group_dead)
{
	if (group_dead) {
		__u32 tgid = task->tgid;
		__u8 *v = bpf_map_lookup_elem(&tracked, &tgid);
		if (v && *v == T_RECORD) {
			bpf_map_delete_elem(&tracked, &tgid);
			// After the delete: a lookup that still found the tgid read the count before this increment.
			__u32 zero = 0;
			__u64 *gen = bpf_map_lookup_elem(&tracked_gen, &zero);
			if (gen)
				__sync_fetch_and_add(gen, 1);
		}
	}
	return 0;
}

static __always_inline void count_unseen(void)
{
	__u32 zero = 0;
	__u64 *n = bpf_map_lookup_elem(&unseen, &zero);
	if (n)
		__sync_fetch_and_add(n, 1);
}

static __always_inline int wanted(long id)
{
	switch (id) {
	case 1: case 18: case 20: case 296: case 328: // write pwrite64 writev pwritev pwritev2
	case 326: case 40: case 77: case 76: case 285: // copy_file_range sendfile ftruncate truncate fallocate
	case 2: case 257: case 85: case 437: // open openat creat openat2
	case 87: case 263: case 84: // unlink unlinkat rmdir
	case 82: case 264: case 316: // rename renameat renameat2
	case 83: case 258: case 88: case 266: case 86: case 265: // mkdir mkdirat symlink symlinkat link linkat
	case 90: case 91: case 268: case 452: // chmod fchmod fchmodat fchmodat2
	case 9: case 425: case 209: // mmap io_uring_setup io_submit: writes no event describes (`unseen`)
	case 16: case 275: // ioctl (FICLONE, FICLONERANGE, FIDEDUPERANGE) splice: the target file changed
		return 1;
	}
	return 0;
}

// A global function too (four open calls share it).
__noinline int dk_on_open(int fd, __u64 flags)
{
	struct file *f = fd_file(CURRENT_TASK(), fd);
	if (!f)
		return 0;
	__u32 fmode = f->f_mode;
	__u16 ev = 0;
	if (fmode & FMODE_CREATED_BIT)
		ev |= F_CREATED;
	if ((flags & O_TRUNC_BIT) && (flags & O_ACCMODE_BITS))
		ev |= F_TRUNCATED;
	if (!ev && !(flags & O_ACCMODE_BITS))
		return 0; // read-only open of an existing file: nothing changes
	emit_file(K_OPEN, ev, fd, 0, 0, 0, 0);
	return 0;
}

// Whether the current process (tgid) is one `record` records. A write storm asks this for every write: the hash
// lookup (jhash and a bucket walk, ~17% of the program's time per write in perf) is spared when this CPU found the
// same tgid recorded and no recorded process has exited since. Only recorded answers are cached, so a process
// added to `tracked` later is seen at its first syscall; the generation is read before the lookup, so a deletion
// racing with it leaves a cached value that no longer matches.
static __always_inline int recorded(__u32 tgid)
{
	__u32 zero = 0;
	__u64 *gen = bpf_map_lookup_elem(&tracked_gen, &zero);
	struct dk_scratch *s = my_scratch();
	if (!gen || !s)
		return 0;
	// Bit 31 (above any pid) keeps the zeroed scratch from matching.
	__u64 hit = (*(volatile __u64 *)gen << 32) | (1u << 31) | tgid;
	if (s->tracked_hit == hit)
		return 1;
	__u8 *t = bpf_map_lookup_elem(&tracked, &tgid);
	if (!t || *t != T_RECORD)
		return 0;
	s->tracked_hit = hit;
	return 1;
}

// Everything happens at the syscall's exit: its arguments are still in the saved registers (the syscall number in
// orig_ax), so no entry program or per-thread map of pending arguments is needed, and a failed call costs nothing.
SEC("tp_btf/sys_exit")
int BPF_PROG(dk_sys_exit, struct pt_regs *regs, long ret)
{
	if (ret < 0)
		return 0;
	long id = regs->orig_ax;
	if (!wanted(id))
		return 0;
	__u32 tgid = bpf_get_current_pid_tgid() >> 32;
	if (!recorded(tgid))
		return 0;
	struct dk_args a = {};
	a.id = id;
	a.a[0] = regs->di;
	a.a[1] = regs->si;
	a.a[2] = regs->dx;
	a.a[3] = regs->r10;
	a.a[4] = regs->r8;
	a.a[5] = regs->r9;
	struct task_struct *task = CURRENT_TASK();
	switch (a.id) {
	case 1: // write(fd, buf, count)
		emit_file(K_WRITE, 0, (int)a.a[0], 0, ret, a.a[1], 1);
		break;
	case 18: // pwrite64(fd, buf, count, pos)
		emit_file(K_WRITE, 0, (int)a.a[0], a.a[3], ret, a.a[1], 0);
		break;
	case 20: // writev(fd, iov, cnt)
		if (ret > 0)
			dk_emit_filev((int)a.a[0], (__u64)-1, ret, a.a[1], a.a[2]);
		break;
	case 296: // pwritev(fd, iov, cnt, pos)
	case 328: // pwritev2(fd, iov, cnt, pos_l, pos_h, flags): pos -1 means the file position
		if (ret > 0 && a.id == 328 && (a.a[5] & RWF_APPEND_BIT))
			emit_file(K_WRITE, F_READBACK, (int)a.a[0], a.a[3], ret, 0, 0); // RWF_APPEND: at the end, read back
		else if (ret > 0)
			dk_emit_filev((int)a.a[0], a.a[3], ret, a.a[1], a.a[2]);
		break;
	case 326: // copy_file_range(fd_in, off_in, fd_out, off_out, len, flags)
		if (ret > 0)
			dk_emit_copy((int)a.a[2], a.a[3], (int)a.a[0], a.a[1], ret);
		break;
	case 40: // sendfile(out_fd, in_fd, offset, count): written at out_fd's position
		if (ret > 0)
			dk_emit_copy((int)a.a[0], 0, (int)a.a[1], a.a[2], ret);
		break;
	case 285: // fallocate(fd, mode, offset, len)
		emit_file(K_CHANGED, F_READBACK | F_FALLOCATE | (__u16)((a.a[1] & 0xff) << 8), (int)a.a[0], a.a[2], a.a[3], 0, 0);
		break;
	case 77: // ftruncate(fd, length)
		emit_file(K_TRUNCATE, 0, (int)a.a[0], a.a[1], 0, 0, 0);
		break;
	case 76: // truncate(path, length)
		emit_named(K_TRUNCATE, 0, AT_FDCWD_INT, a.a[0], a.a[1]);
		break;
	case 2: // open(path, flags, mode)
	case 85: // creat(path, mode)
		dk_on_open((int)ret, a.id == 85 ? (O_CREAT_BIT | O_TRUNC_BIT | 1) : a.a[1]);
		break;
	case 257: // openat(dfd, path, flags, mode)
		dk_on_open((int)ret, a.a[2]);
		break;
	case 437: { // openat2(dfd, path, how, size)
		__u64 flags = 0;
		bpf_probe_read_user(&flags, sizeof(flags), (const void *)a.a[2]);
		dk_on_open((int)ret, flags);
		break;
	}
	case 87: // unlink(path)
		emit_named(K_UNLINK, 0, AT_FDCWD_INT, a.a[0], 0);
		break;
	case 263: // unlinkat(dfd, path, flags)
		emit_named((a.a[2] & AT_REMOVEDIR_BIT) ? K_RMDIR : K_UNLINK, 0, (int)a.a[0], a.a[1], 0);
		break;
	case 84: // rmdir(path)
		emit_named(K_RMDIR, 0, AT_FDCWD_INT, a.a[0], 0);
		break;
	case 82: // rename(old, new)
		emit_named(K_RENAME_FROM, 0, AT_FDCWD_INT, a.a[0], 0);
		emit_named(K_RENAME_TO, 0, AT_FDCWD_INT, a.a[1], 0);
		break;
	case 264: // renameat(olddfd, old, newdfd, new)
	case 316: { // renameat2(olddfd, old, newdfd, new, flags)
		__u16 fl = (a.id == 316 && (a.a[4] & RENAME_EXCHANGE_BIT)) ? F_EXCHANGE : 0;
		emit_named(K_RENAME_FROM, fl, (int)a.a[0], a.a[1], 0);
		emit_named(K_RENAME_TO, fl, (int)a.a[2], a.a[3], 0);
		break;
	}
	case 83: // mkdir(path, mode)
		emit_named(K_MKDIR, 0, AT_FDCWD_INT, a.a[0], mkdir_mode(task, a.a[1]));
		break;
	case 258: // mkdirat(dfd, path, mode)
		emit_named(K_MKDIR, 0, (int)a.a[0], a.a[1], mkdir_mode(task, a.a[2]));
		break;
	case 88: // symlink(target, linkpath)
		emit_named(K_SYMLINK_TARGET, 0, AT_FDCWD_INT, a.a[0], 0);
		emit_named(K_SYMLINK, 0, AT_FDCWD_INT, a.a[1], 0);
		break;
	case 266: // symlinkat(target, newdfd, linkpath)
		emit_named(K_SYMLINK_TARGET, 0, AT_FDCWD_INT, a.a[0], 0);
		emit_named(K_SYMLINK, 0, (int)a.a[1], a.a[2], 0);
		break;
	case 86: // link(old, new)
		emit_named(K_LINK_FROM, 0, AT_FDCWD_INT, a.a[0], 0);
		emit_named(K_LINK, 0, AT_FDCWD_INT, a.a[1], 0);
		break;
	case 265: // linkat(olddfd, old, newdfd, new, flags)
		emit_named(K_LINK_FROM, 0, (int)a.a[0], a.a[1], 0);
		emit_named(K_LINK, 0, (int)a.a[2], a.a[3], 0);
		break;
	case 90: // chmod(path, mode)
		emit_named(K_CHMOD, 0, AT_FDCWD_INT, a.a[0], a.a[1]);
		break;
	case 268: // fchmodat(dfd, path, mode)
	case 452: // fchmodat2(dfd, path, mode, flags)
		emit_named(K_CHMOD, 0, (int)a.a[0], a.a[1], a.a[2]);
		break;
	case 91: // fchmod(fd, mode)
		emit_file(K_CHMOD, 0, (int)a.a[0], a.a[1], 0, 0, 0);
		break;
	case 9: { // mmap(addr, len, prot, flags, fd, off): a shared mapping of a file opened for writing
		// FMODE_WRITE rather than PROT_WRITE: mprotect can make such a mapping writable later.
		if (!(a.a[3] & MAP_SHARED_BIT) || (int)a.a[4] < 0)
			break;
		struct file *f = fd_file(task, (int)a.a[4]);
		if (f && (f->f_mode & FMODE_WRITE_BIT))
			count_unseen();
		break;
	}
	case 425: // io_uring_setup
	case 209: // io_submit
		count_unseen();
		break;
	case 16: // ioctl(fd, cmd, arg): a clone or dedupe onto fd rewrote its bytes without a write
		if (a.a[1] == FICLONE_CMD || a.a[1] == FICLONERANGE_CMD)
			dk_emit_clone((int)a.a[0], a.a[2], a.a[1] == FICLONERANGE_CMD);
		else if (a.a[1] == FIDEDUPERANGE_CMD)
			emit_file(K_CHANGED, F_READBACK, (int)a.a[0], 0, 0, 0, 0);
		break;
	case 275: // splice(fd_in, off_in, fd_out, off_out, len, flags)
		if (ret > 0)
			emit_file(K_CHANGED, F_READBACK, (int)a.a[2], 0, ret, 0, 0);
		break;
	}
	return 0;
}
