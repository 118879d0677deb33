/*
 * lxcri-pve-init: PID 1 of a Proxmox backend CT (runtime/proxmox/initdir.py).
 *
 * The LXC backend's containers run the exec-only lxcri-init.c, which execve()s the program
 * as PID 1 (its monitor, lxcri-start, reports the exit status). A Proxmox CT is started by
 * Proxmox's own lxc-start, which reports no status, so this init stays the CT's PID 1: it runs
 * the program as its child, holds the created state at its gate FIFO and records the status
 * in a file. What follows is its original description (it was the CRIU mode's init first).
 *
 * lxcri-init: PID 1 of a container that may be checkpointed with CRIU.
 *
 * Why it exists: with no init inside the container, lxc-execute runs LXC's init in-process,
 * so the container's PID 1 maps the host's /usr/bin/lxc-execute and liblxc, files outside the
 * container's mount namespace that CRIU cannot dump ("Can't lookup mount=... for fd=-3
 * path=/usr/bin/lxc-execute", measured in the kernel test host). LXC 5 execs an init it finds
 * in the container instead (choose_init() in src/lxc/utils.c searches "init.lxc" along PATH
 * under the rootfs, after the mount entries are mounted); the runtime bind-mounts a directory
 * holding this static binary at /dev/.lxcri and puts that directory first in PATH.
 *
 * It behaves like LXC's own init (`docker run --init`): the program runs as PID 2 in its own
 * session (with the terminal as its controlling tty when stdin is one), signals sent to PID 1
 * are forwarded to it, orphans are reaped, and PID 1 exits with the program's status (128 +
 * signal for a signal death). That status is also written to /dev/.lxcri/status before the
 * exit: after a CRIU restore the init's parent is LXC's restore monitor, which does not pass
 * the status on, so the runtime reads it there. The runtime creates that file writable for
 * the init, which may run as an unprivileged user.
 *
 * /dev/.lxcri/stdio holds one character per standard descriptor of the program: 'n' replaces
 * it with the container's own /dev/null (the runtime's stand-in for an empty stdio path would
 * be the host's /dev/null, a file CRIU cannot dump), '-' keeps it.
 *
 * 'f' (the Proxmox backend, runtime/proxmox/initdir.py) opens /dev/.lxcri/fd<N> instead: there
 * the container's own stdio is Proxmox's (/dev/null), so the runtime bind-mounts the client's
 * stdio FIFOs there; the program opens them, as the program's own user.
 *
 * If /dev/.lxcri/gate exists (Proxmox backend), PID 1 reads one line from it before the program
 * runs: "go" runs it, anything else (EOF: the runtime is gone or aborted) exits 1 without
 * running it. This holds a created container whose start is not the runtime's to hold.
 *
 * The spec's process settings (user, groups, cwd, rlimits, capabilities, no_new_privs and the
 * seccomp filter) are applied by the LXC backend's own init, lxcri-init.c, the same binary: if
 * /dev/.lxcri/init.lxc and /dev/.lxcri/process exist (Proxmox backend), the child execs
 * "init.lxc /dev/.lxcri" after its stdio is set up, and lxcri-init applies them in runc's order
 * and execs the program from /dev/.lxcri/argv, exactly as for an LXC backend container (and
 * for an exec, which lxc-attach runs through the same init.lxc). PID 1 stays unconfined: it
 * only waits, forwards signals and records the status.
 *
 * The runtime starts it with lxc-start as lxc.init.cmd, with no arguments: LXC splits
 * lxc.init.cmd at spaces without honouring quotes, so the program's argv is read from
 * /dev/.lxcri/argv (NUL-terminated strings) instead. Given "-- PROGRAM ARGS", it runs those.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <termios.h>
#include <unistd.h>

#define STATUS_FILE "/dev/.lxcri/status"
#define ARGV_FILE "/dev/.lxcri/argv"
#define STDIO_FILE "/dev/.lxcri/stdio"
#define GATE_FILE "/dev/.lxcri/gate"
#define APPLY_DIR "/dev/.lxcri"
#define APPLY_INIT APPLY_DIR "/init.lxc"
#define PROCESS_FILE APPLY_DIR "/process"
#define ARGV_MAX (1 << 20)

/* The NUL-separated strings of ARGV_FILE as a NULL-terminated vector, or NULL. */
static char **read_argv(void)
{
	static char buf[ARGV_MAX];
	size_t len = 0, count = 0;
	char **argv;
	int fd = open(ARGV_FILE, O_RDONLY | O_CLOEXEC);

	if (fd < 0)
		return NULL;
	for (;;) {
		ssize_t n = read(fd, buf + len, sizeof(buf) - 1 - len);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += n;
	}
	close(fd);
	if (len == 0 || buf[len - 1] != '\0')
		return NULL;
	for (size_t i = 0; i < len; i++)
		count += buf[i] == '\0';
	argv = calloc(count + 1, sizeof(*argv));
	if (!argv)
		return NULL;
	for (size_t i = 0, k = 0; i < len; i += strlen(buf + i) + 1)
		argv[k++] = buf + i;
	return argv;
}

static void close_from(int lowest)
{
#ifdef SYS_close_range
	if (syscall(SYS_close_range, lowest, ~0U, 0) == 0)
		return;
#endif
	for (int fd = lowest; fd < 1024; fd++)
		close(fd);
}

static void write_status(int status)
{
	char buf[16];
	int n = snprintf(buf, sizeof(buf), "%d\n", status);
	int fd = open(STATUS_FILE, O_WRONLY | O_TRUNC | O_CLOEXEC);

	if (fd < 0)
		return;
	if (write(fd, buf, n) != n)
		perror("lxcri-init: " STATUS_FILE);
	close(fd);
}

/* Point the descriptors STDIO_FILE marks with 'n' at the container's /dev/null. */
static void null_stdio(void)
{
	char marks[3];
	int fd = open(STDIO_FILE, O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return;
	n = read(fd, marks, sizeof(marks));
	close(fd);
	for (int i = 0; i < n; i++) {
		if (marks[i] == 'f') {
			char path[32];
			int f;

			snprintf(path, sizeof(path), "/dev/.lxcri/fd%d", i);
			/* Outputs O_RDWR, as runtime/stdio.py opens them for the LXC backend: the
			 * program then holds a reader too, so its writes never fail with EPIPE while
			 * no client reads (ctr run -d), and the client's EOF comes when it exits. */
			f = open(path, i == 0 ? O_RDONLY : O_RDWR);
			if (f < 0) {
				perror(path);
				_exit(126);
			}
			if (f != i) {
				dup2(f, i);
				close(f);
			}
			continue;
		}
		if (marks[i] != 'n')
			continue;
		int null = open("/dev/null", O_RDWR);
		if (null < 0)
			return;
		if (null != i) {
			dup2(null, i);
			close(null);
		}
	}
}

/* One line from GATE_FILE: true for "go". Opened non-blocking so that a FIFO without a writer
 * (the runtime is gone) reads EOF instead of waiting forever. */
static int gate_passed(void)
{
	char buf[8];
	size_t len = 0;
	int fd = open(GATE_FILE, O_RDONLY | O_NONBLOCK | O_CLOEXEC);

	if (fd < 0)
		return 0;
	fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
	while (len < sizeof(buf)) {
		ssize_t n = read(fd, buf + len, 1);

		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0 || buf[len] == '\n')
			break;
		len++;
	}
	close(fd);
	return len == 2 && memcmp(buf, "go", 2) == 0;
}

static int decode(int wstatus)
{
	if (WIFEXITED(wstatus))
		return WEXITSTATUS(wstatus);
	if (WIFSIGNALED(wstatus))
		return 128 + WTERMSIG(wstatus);
	return 255;
}

int main(int argc, char *argv[])
{
	sigset_t all, old;
	char **program = NULL;
	pid_t child;

	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			program = &argv[i + 1];
			break;
		}
	}
	if (!program)
		program = read_argv();
	if (!program || !program[0]) {
		fprintf(stderr, "lxcri-init: no program: %s is missing or empty and no \"-- PROGRAM\" "
			"was given\n", ARGV_FILE);
		return 1;
	}
	/* LXC hands its log file over as -o /proc/1/fd/N: a host file CRIU could not dump. */
	close_from(3);
	if (access(GATE_FILE, F_OK) == 0 && !gate_passed())
		return 1;

	sigfillset(&all);
	sigprocmask(SIG_BLOCK, &all, &old);

	child = fork();
	if (child < 0) {
		perror("lxcri-init: fork");
		return 1;
	}
	if (child == 0) {
		sigprocmask(SIG_SETMASK, &old, NULL);
		null_stdio();
		if (setsid() < 0)
			perror("lxcri-init: setsid");
		if (isatty(STDIN_FILENO))
			ioctl(STDIN_FILENO, TIOCSCTTY, 0);
		if (access(APPLY_INIT, X_OK) == 0 && access(PROCESS_FILE, F_OK) == 0) {
			char *apply[] = {APPLY_INIT, APPLY_DIR, NULL};

			execv(APPLY_INIT, apply);
			fprintf(stderr, "lxcri-init: %s: %s\n", APPLY_INIT, strerror(errno));
			_exit(126);
		}
		execvp(program[0], program);
		fprintf(stderr, "lxcri-init: %s: %s\n", program[0], strerror(errno));
		_exit(errno == ENOENT ? 127 : 126);
	}

	/* The program keeps the container's stdio; PID 1 lets go of its copies so that it holds
	 * nothing from outside the container (its stdio may be a host FIFO or pipe). */
	int null = open("/dev/null", O_RDWR);
	if (null >= 0) {
		dup2(null, 0);
		dup2(null, 1);
		dup2(null, 2);
		if (null > 2)
			close(null);
	}

	for (;;) {
		siginfo_t info;
		int sig = sigwaitinfo(&all, &info);

		if (sig < 0)
			continue;
		if (sig != SIGCHLD) {
			kill(child, sig);
			continue;
		}
		for (;;) {
			int wstatus;
			pid_t pid = waitpid(-1, &wstatus, WNOHANG);

			if (pid <= 0)
				break;
			if (pid == child) {
				int status = decode(wstatus);

				write_status(status);
				return status;
			}
		}
	}
}
