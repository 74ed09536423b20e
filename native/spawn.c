// Starts the recorded command the way the shell that started diffkeeper would have started it.
//
// The .NET runtime changes the process's signal state before any managed code runs (NativeAOT ignores SIGPIPE
// during start-up) and later installs handlers (SIGINT, SIGQUIT, SIGCHLD, SIGCONT, ... for Console and
// PosixSignalRegistration). exec(2) keeps an ignored signal ignored and resets a handled one to its default, so a
// child started plainly would inherit SIGPIPE ignored, and would get SIGINT back as default where its caller (a
// non-interactive shell starting a background job) had it ignored. A constructor of this file records the
// caller's state before the runtime starts; dk_spawn puts exactly that state back between fork and exec.
//
// Linked statically into the NativeAOT executable (src/DiffKeeper.Cli/DiffKeeper.Cli.csproj). Under the JIT it is
// a shared library loaded at the first call, after the runtime started: the recorded state is then the
// runtime's, not the caller's (see docs/architecture.md, "The recorded command's process").

#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <string.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

static sigset_t caller_mask;
static unsigned char caller_ignored[_NSIG];

// Priority 101 is the first a program may use: this runs before any other constructor of the executable.
__attribute__((constructor(101))) static void dk_record_caller_signals(void)
{
    sigprocmask(SIG_BLOCK, NULL, &caller_mask);
    for (int sig = 1; sig < _NSIG; sig++)
    {
        struct sigaction sa;
        if (sigaction(sig, NULL, &sa) == 0 && !(sa.sa_flags & SA_SIGINFO) && sa.sa_handler == SIG_IGN)
        {
            caller_ignored[sig] = 1;
        }
    }

    // With SIGCHLD ignored the kernel reaps our children itself (waitpid could never return the command's
    // status), and the runtime, seeing it ignored at start, would reap every child with waitpid(-1). The command
    // still gets it ignored.
    if (caller_ignored[SIGCHLD])
    {
        signal(SIGCHLD, SIG_DFL);
    }
}

// What the child reports through the pipe when it cannot exec; nothing arrives when exec succeeded.
struct dk_failure
{
    int stage; // 1 chdir, 2 exec
    int error; // errno
};

__attribute__((noreturn)) static void dk_fail(int fd, int stage)
{
    struct dk_failure f = { stage, errno };
    ssize_t ignored = write(fd, &f, sizeof f);
    (void)ignored;
    _exit(127);
}

// Runs in the vforked child: only system calls on its own stack (it shares the parent's memory, whose other threads
// run on), then exec or _exit.
// Not inlined: its locals are then below the parent's stack pointer, where nothing of the suspended parent's frame
// (the signal mask it restores, the pipe's descriptors) can share a slot with them.
__attribute__((noreturn, noinline)) static void dk_child(int fd, const char *file, char *const argv[], const char *cwd)
{
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sigemptyset(&sa.sa_mask);
    for (int sig = 1; sig < _NSIG; sig++)
    {
        if (sig == SIGKILL || sig == SIGSTOP)
        {
            continue;
        }

        // Fails (EINVAL) for the signals libc keeps for itself; those are not the caller's to give.
        sa.sa_handler = caller_ignored[sig] ? SIG_IGN : SIG_DFL;
        sigaction(sig, &sa, NULL);
    }

    if (cwd != NULL && chdir(cwd) != 0)
    {
        dk_fail(fd, 1);
    }

    // Last: a signal that was pending while everything was blocked is now delivered under the caller's dispositions.
    sigprocmask(SIG_SETMASK, &caller_mask, NULL);
    execvp(file, argv);
    dk_fail(fd, 2);
}

// Starts file (searched in PATH like a shell does) with argv in cwd. Returns the child's pid once it has
// exec'd, or -1 with *stage (0 fork/pipe, 1 chdir, 2 exec) and *error (errno); a child that failed is reaped.
int dk_spawn(const char *file, char *const argv[], const char *cwd, int *stage, int *error)
{
    int fds[2];
    if (pipe2(fds, O_CLOEXEC) != 0)
    {
        *stage = 0;
        *error = errno;
        return -1;
    }

    // All signals blocked across the fork: a signal reaching the child before its dispositions are reset would run
    // the runtime's handler there, which reports it to the parent's runtime as if the parent had got it.
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old);
    // vfork, as posix_spawn does: the child borrows this process's memory until it execs, so nothing of it is copied.
    // fork copied the page tables of the whole recorder (the eBPF ring's 128 MiB mapping alone is 32,768 entries),
    // and the child's exec tore its copy down again: ~10 ms before every recorded command started. The child only
    // makes system calls on its own stack (dk_child: sigaction, chdir, sigprocmask, execvp, write, _exit); its fd
    // table, signal handlers and working directory are its own copies.
    pid_t pid = vfork();
    if (pid == 0)
    {
        close(fds[0]);
        dk_child(fds[1], file, argv, cwd); // does not return
    }

    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(fds[1]);
    if (pid < 0)
    {
        close(fds[0]);
        *stage = 0;
        *error = fork_errno;
        return -1;
    }

    struct dk_failure f;
    ssize_t n;
    while ((n = read(fds[0], &f, sizeof f)) < 0 && errno == EINTR)
    {
    }

    close(fds[0]);
    if (n != (ssize_t)sizeof f)
    {
        return pid; // end of file: exec closed the pipe
    }

    int status;
    while (waitpid(pid, &status, 0) < 0 && errno == EINTR)
    {
    }

    *stage = f.stage;
    *error = f.error;
    return -1;
}

// Blocks until the child has exited, without reaping it (the pid stays the child's until the caller reaps it,
// so a signal forwarded meanwhile cannot reach a process that reused the number). Returns 0, or an errno.
int dk_wait_exited(int pid)
{
    siginfo_t info;
    while (waitid(P_PID, (id_t)pid, &info, WEXITED | WNOWAIT) != 0)
    {
        if (errno != EINTR)
        {
            return errno;
        }
    }

    return 0;
}
