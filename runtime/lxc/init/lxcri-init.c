/*
 * lxcri-init: the container's first process until it becomes the user's program.
 *
 * LXC starts every container in its "start" mode with lxc.init.cmd naming this static binary
 * (bind-mounted with its per-container files at /dev/.lxcri, on the container's autodev
 * tmpfs, so nothing is written into the root filesystem). It does what runc's `runc init`
 * does between the container's set-up and the program, in runc's order
 * (libcontainer/standard_init_linux.go, finalizeNamespace in init_linux.go), and then
 * execve()s the program in its own place: the program is PID 1 of the container's PID
 * namespace, with the host PID the start-host hook reported, as under runc.
 *
 *   1. descriptors other than stdio closed (LXC hands its log over as one); the stdio marked
 *      in /dev/.lxcri/stdio replaced by the container's own /dev/null; a terminal on stdin
 *      made the controlling terminal;
 *   2. the root's mount propagation (linux.rootfsPropagation), after LXC's pivot_root;
 *   3. rlimits;
 *   4. without no_new_privs: the seccomp filter now, while the capability to load it
 *      (CAP_SYS_ADMIN) is still held;
 *   5. the bounding set; keep-caps; supplementary groups, gid, uid (the working directory
 *      entered before the uid change, and again after it if root could not); the effective,
 *      permitted and inheritable sets (capset) and the ambient set;
 *   6. no_new_privs;
 *   7. the executable looked up in the spec's PATH and checked executable for this user
 *      (runc 1.1 does it before its exec FIFO wait, exec.LookPath and Eaccess);
 *   8. signal mask and dispositions reset; with no_new_privs the seccomp filter now, as the
 *      last step, so it confines the program and nothing of this init but the gate and the
 *      execve;
 *   9. the container (not an exec): "ready" over the gate, then the wait for "go" (OCI
 *      start); execve. With create-time hooks ("hooks"), the init first waits for
 *      "setup" before step 1's propagation: the runtime runs the hooks then, as runc runs
 *      them before its init's last steps. The write end of /dev/.lxcri/exec, held with O_CLOEXEC, closes on the
 *      successful execve: the runtime's poststart hooks wait for that.
 *
 * The gate (the container's init only, "gate" in the process file) is how OCI create learns
 * the outcome of steps 1-8, as runc's create does (its init runs every set-up step, then
 * waits on the exec FIFO): gate-ready carries LXC_PID from the start-host hook (gate.sh),
 * then one line of this init, "ready" or "error KIND MESSAGE" (KIND: notfound, invalid,
 * precondition, internal; the runtime's errdefs); gate-start brings "go" (start) or
 * "abort" / EOF (delete, a kill before start, the runtime gone), which ends the init.
 * After "ready" the init makes only read(2) (the gate) and execve(2); runc's init makes
 * openat, write and close (its FIFO) and execve after its filter.
 *
 * LXC itself is configured to do none of steps 3-7 (no lxc.cap.keep, lxc.init.uid/gid/
 * groups, lxc.prlimit, lxc.no_new_privs or lxc.seccomp.profile): done by LXC they would
 * confine LXC's own last steps and this init, and LXC clears the effective and permitted
 * sets of a non-root user and never sets the inheritable and ambient ones.
 *
 * Files (written by runtime/lxc/owninit.py):
 *   argv     the program's arguments, NUL-terminated (LXC splits lxc.init.cmd at spaces
 *            without honouring quotes, so they cannot go there);
 *   process  one directive per line: "uid N", "gid N", "groups [N...]",
 *            "rlimit RESOURCE SOFT HARD", "caps BOUNDING EFFECTIVE PERMITTED INHERITABLE
 *            AMBIENT" (hexadecimal masks; no line: capabilities untouched), "nnp",
 *            "cwd PATH", "propagation MOUNT_FLAGS", "seccomp FLAGS" (load the filter in
 *            the file seccomp with these seccomp(2) flags), "gate" or "gate hold" (the
 *            container's init: make the cwd if it is missing, as runc does, report over the
 *            gate and wait there; "hold": keep a writer of gate-start open itself, so it
 *            outlives the creating process, for the OCI CLI); "hooks" (wait for "setup"
 *            first); "rlimit" lines end with the
 *            OCI type's name, for messages;
 *   seccomp  the compiled filter: an array of struct sock_filter (runtime/lxc/seccomp.py);
 *   stdio    one character per standard descriptor: 'n' = the container's /dev/null;
 *   exec     a FIFO the runtime reads; its write end closes at the execve;
 *   gate-ready, gate-start  the gate's FIFOs (the container's init only).
 *
 * An exec (lxc-attach into the running container) runs this init too, with the directory of
 * its own files as the only argument, so the exec'd process gets its own user, groups and
 * capabilities and the container's seccomp filter exactly as the container's process does
 * (lxc-attach has no option for supplementary groups and would apply LXC's capability and
 * seccomp settings, which the container no longer has). "cwd PATH" (also in the
 * container's file) is the working directory, the exec's only way to one (lxc-attach has no
 * option for it). "propagation FLAGS" is the container's only.
 *
 * A failure before "ready" is reported over the gate (Create fails with it) and ends the init
 * with status 1. Without a gate (an exec) and after "go", a failure is reported on stderr as
 * "lxcri-init: ..." and ends the process with status 127 (program not found), 126 (not
 * executable) or 1 (set-up).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <inttypes.h>
#include <linux/capability.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <unistd.h>

#define DIR "/dev/.lxcri/"
#define PATH_MAX_LEN 4096
#define ARGV_MAX (1 << 20)
#define GROUPS_MAX 65536
#define RLIMITS_MAX 32
#define FILTER_MAX 65536 /* BPF_MAXINSNS is 4096; libseccomp never makes more */
/* The PATH of a spec without one (runc's and Docker's default; runtime/lxc/rootfs.py). */
#define DEFAULT_PATH "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
/* An error line on the gate must be one atomic FIFO write (pipe(7): PIPE_BUF). */
#define LINE_MAX_LEN 4096

/* The gate's ends while the container is being created (-1: none, or no longer). */
static int report_fd = -1;
static int gate_start = -1;

/* The directory of the files: DIR, or the one given as the only argument (an exec's). */
static const char *dir = DIR;

static const char *in_dir(const char *name)
{
	static char buf[4][PATH_MAX_LEN];
	static int next;
	char *out = buf[next++ % 4];

	snprintf(out, PATH_MAX_LEN, "%s/%s", dir, name);
	return out;
}

struct process {
	uid_t uid;
	gid_t gid;
	gid_t *groups;
	int ngroups;
	struct {
		int resource;
		struct rlimit limit;
		char name[24];
	} rlimits[RLIMITS_MAX];
	int nrlimits;
	int caps; /* the caps line was given */
	uint64_t bounding, effective, permitted, inheritable, ambient;
	int nnp;
	char *cwd;
	unsigned long propagation; /* mount flags for "/" (MS_SHARED, MS_REC, ...), 0: none */
	int seccomp; /* the seccomp line was given */
	unsigned int seccomp_flags;
	int gate; /* 0: none (an exec), 1: the gate, 2: the gate, held */
	int hooks; /* wait for "setup" first: the runtime runs the create-time hooks */
};

/* An error: over the gate while there is one (one line, "error KIND MESSAGE"), else on
 * stderr; then the end of the init with `code`. */
static void __attribute__((noreturn, format(printf, 3, 4)))
die(const char *kind, int code, const char *fmt, ...)
{
	char msg[LINE_MAX_LEN - 64];
	char line[LINE_MAX_LEN];
	va_list ap;
	int n;

	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	if (report_fd >= 0) {
		for (char *c = msg; *c; c++)
			if (*c == '\n')
				*c = ' ';
		n = snprintf(line, sizeof(line), "error %s %s\n", kind, msg);
		if (write(report_fd, line, n) == n)
			_exit(code);
	}
	fprintf(stderr, "lxcri-init: %s\n", msg);
	_exit(code);
}

static void fail(const char *what)
{
	die("internal", 1, "%s: %s", what, strerror(errno));
}

static void fail_msg(const char *what)
{
	die("internal", 1, "%s", what);
}

/* strerror as Go spells it (runc's messages): lower case. */
static const char *go_error(int err)
{
	static char buf[128];

	snprintf(buf, sizeof(buf), "%s", strerror(err));
	if (buf[0] >= 'A' && buf[0] <= 'Z')
		buf[0] += 'a' - 'A';
	return buf;
}

/* The whole file, NUL-terminated, in a static or allocated buffer; *len its length. */
static char *read_file(const char *path, size_t max, size_t *len)
{
	char *buf = malloc(max + 1);
	size_t n = 0;
	int fd = open(path, O_RDONLY | O_CLOEXEC);

	if (!buf || fd < 0)
		fail(path);
	for (;;) {
		ssize_t r = read(fd, buf + n, max - n);

		if (r < 0 && errno == EINTR)
			continue;
		if (r < 0)
			fail(path);
		if (r == 0)
			break;
		n += r;
		if (n == max)
			fail_msg("a file of the init is too large");
	}
	close(fd);
	buf[n] = '\0';
	*len = n;
	return buf;
}

/* The NUL-separated strings of the argv file as a NULL-terminated vector. */
static char **read_argv(void)
{
	size_t len, count = 0;
	char *buf = read_file(in_dir("argv"), ARGV_MAX, &len);
	char **argv;

	if (len == 0 || buf[len - 1] != '\0')
		fail_msg("argv: empty or not NUL-terminated");
	for (size_t i = 0; i < len; i++)
		count += buf[i] == '\0';
	argv = calloc(count + 1, sizeof(*argv));
	if (!argv)
		fail("calloc");
	for (size_t i = 0, k = 0; i < len; i += strlen(buf + i) + 1)
		argv[k++] = buf + i;
	return argv;
}

static void read_process(struct process *p)
{
	size_t len;
	char *text = read_file(in_dir("process"), 1 << 20, &len);
	char *save = NULL;

	memset(p, 0, sizeof(*p));
	p->groups = calloc(GROUPS_MAX, sizeof(gid_t));
	if (!p->groups)
		fail("calloc");
	for (char *line = strtok_r(text, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
		unsigned long long a, b;
		int r, off;

		if (sscanf(line, "uid %u", &p->uid) == 1 || sscanf(line, "gid %u", &p->gid) == 1)
			continue;
		if (strncmp(line, "groups", 6) == 0) {
			char *s = line + 6;
			unsigned int g;

			while (p->ngroups < GROUPS_MAX && sscanf(s, " %u%n", &g, &off) == 1) {
				p->groups[p->ngroups++] = g;
				s += off;
			}
			continue;
		}
		if (sscanf(line, "rlimit %d %llu %llu", &r, &a, &b) == 3) {
			if (p->nrlimits == RLIMITS_MAX)
				fail_msg("too many rlimits");
			if (sscanf(line, "rlimit %*d %*s %*s %23s", p->rlimits[p->nrlimits].name) != 1)
				snprintf(p->rlimits[p->nrlimits].name, sizeof(p->rlimits[0].name),
					 "type %d", r);
			p->rlimits[p->nrlimits].resource = r;
			p->rlimits[p->nrlimits].limit.rlim_cur = a;
			p->rlimits[p->nrlimits].limit.rlim_max = b;
			p->nrlimits++;
			continue;
		}
		if (sscanf(line, "caps %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64 " %" SCNx64,
			   &p->bounding, &p->effective, &p->permitted, &p->inheritable,
			   &p->ambient) == 5) {
			p->caps = 1;
			continue;
		}
		if (sscanf(line, "propagation %lu", &p->propagation) == 1)
			continue;
		if (strncmp(line, "cwd ", 4) == 0) {
			p->cwd = line + 4;
			continue;
		}
		if (strcmp(line, "nnp") == 0) {
			p->nnp = 1;
			continue;
		}
		if (strcmp(line, "gate") == 0 || strcmp(line, "gate hold") == 0) {
			p->gate = line[4] ? 2 : 1;
			continue;
		}
		if (strcmp(line, "hooks") == 0) {
			p->hooks = 1;
			continue;
		}
		if (sscanf(line, "seccomp %u", &p->seccomp_flags) == 1) {
			p->seccomp = 1;
			continue;
		}
		die("internal", 1, "process: unknown line \"%s\"", line);
	}
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

/* Point the descriptors the stdio file marks with 'n' at the container's /dev/null: the
 * runtime's stand-in for an empty stdio path is the host's /dev/null, a file CRIU cannot
 * dump. */
static void null_stdio(void)
{
	char marks[3];
	int fd = open(in_dir("stdio"), O_RDONLY | O_CLOEXEC);
	ssize_t n;

	if (fd < 0)
		return;
	n = read(fd, marks, sizeof(marks));
	close(fd);
	for (int i = 0; i < n; i++) {
		if (marks[i] != 'n')
			continue;
		int null = open("/dev/null", O_RDWR);
		if (null < 0)
			fail("/dev/null");
		if (null != i) {
			dup2(null, i);
			close(null);
		}
	}
}

/* The compiled filter (read before the uid change, which could make it unreadable). */
static struct sock_fprog read_filter(void)
{
	size_t len;
	char *buf = read_file(in_dir("seccomp"), FILTER_MAX * sizeof(struct sock_filter), &len);
	struct sock_fprog prog;

	if (len == 0 || len % sizeof(struct sock_filter) != 0)
		fail_msg("seccomp: not a BPF program");
	prog.len = len / sizeof(struct sock_filter);
	prog.filter = (struct sock_filter *)buf;
	return prog;
}

static void load_filter(struct sock_fprog *prog, unsigned int flags)
{
	if (syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, flags, prog) != 0)
		die("invalid", 1, "linux.seccomp: loading the filter (flags %u): %s", flags,
		    strerror(errno));
}

static int last_cap(void)
{
	char buf[16] = "";
	int fd = open("/proc/sys/kernel/cap_last_cap", O_RDONLY | O_CLOEXEC);
	int last = CAP_LAST_CAP;

	if (fd >= 0) {
		if (read(fd, buf, sizeof(buf) - 1) > 0)
			last = atoi(buf);
		close(fd);
	}
	return last;
}

static void set_caps(const struct process *p)
{
	struct __user_cap_header_struct hdr = {.version = _LINUX_CAPABILITY_VERSION_3};
	struct __user_cap_data_struct data[2];

	for (int i = 0; i < 2; i++) {
		data[i].effective = (uint32_t)(p->effective >> (32 * i));
		data[i].permitted = (uint32_t)(p->permitted >> (32 * i));
		data[i].inheritable = (uint32_t)(p->inheritable >> (32 * i));
	}
	if (syscall(SYS_capset, &hdr, data) != 0)
		die("invalid", 1, "process.capabilities: capset (effective %" PRIx64 ", permitted %"
		    PRIx64 ", inheritable %" PRIx64 "): %s", p->effective, p->permitted,
		    p->inheritable, strerror(errno));
	if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_CLEAR_ALL, 0, 0, 0) != 0 && errno != EINVAL)
		fail("clearing the ambient capabilities");
	for (int cap = 0; cap < 64; cap++) {
		if (!(p->ambient & (1ULL << cap)))
			continue;
		if (prctl(PR_CAP_AMBIENT, PR_CAP_AMBIENT_RAISE, cap, 0, 0) != 0)
			die("invalid", 1, "process.capabilities.ambient: raising capability %d (it "
			    "must be permitted and inheritable too): %s", cap, strerror(errno));
	}
}

static void reset_signals(void)
{
	sigset_t none;

	for (int sig = 1; sig < NSIG; sig++)
		signal(sig, SIG_DFL); /* SIGKILL, SIGSTOP and the libc-reserved ones fail: fine */
	sigemptyset(&none);
	sigprocmask(SIG_SETMASK, &none, NULL);
}

/* The gate's two FIFOs, opened before any set-up step so that every error can be reported.
 * gate-ready: the runtime holds it open for reading, so O_NONBLOCK never fails with ENXIO
 * unless the runtime is gone, and a write never blocks. gate-start: opened without blocking
 * (the runtime holds a writer; "hold": this init holds one itself, so a later process's "go"
 * finds a reader and EOF never comes), then read blocking. */
static void open_gate(int hold)
{
	report_fd = open(in_dir("gate-ready"), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	if (report_fd < 0)
		fail("gate-ready");
	gate_start = open(in_dir("gate-start"), (hold ? O_RDWR : O_RDONLY) | O_NONBLOCK | O_CLOEXEC);
	if (gate_start < 0 || fcntl(gate_start, F_SETFL, 0) != 0)
		fail("gate-start");
}

/* Wait for the line `want` on gate-start; anything else ("abort", or EOF: the runtime is
 * gone) ends the init, as SIGKILL would. One byte at a time, so that a later line stays in
 * the FIFO for the next wait (a few bytes: a few read(2) calls). */
static void wait_for(const char *want)
{
	char buf[16];
	size_t n = 0;

	for (;;) {
		ssize_t r = read(gate_start, buf + n, 1);

		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0 || n + 1 == sizeof(buf))
			_exit(128 + SIGKILL);
		if (buf[n] == '\n')
			break;
		n++;
	}
	buf[n] = '\0';
	if (strcmp(buf, want) != 0)
		_exit(128 + SIGKILL);
}

/* Set-up done: tell the runtime (OCI create returns) and wait for "go" (OCI start). */
static void ready_and_wait(void)
{
	if (write(report_fd, "ready\n", 6) != 6)
		_exit(1); /* nobody to tell: the runtime is gone, or the filter forbids write(2) */
	report_fd = -1; /* closed at the execve (O_CLOEXEC); later errors go to stderr */
	wait_for("go");
}

/* mkdir -p with mode 0755, as runc makes a missing cwd (os.MkdirAll inside the container's
 * root, before the user switch); -1 with errno set, ENOTDIR for a file in the way. */
static int mkdir_all(const char *path)
{
	char buf[PATH_MAX_LEN];
	struct stat st;

	if (stat(path, &st) == 0)
		return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
	if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
		return errno = ENAMETOOLONG, -1;
	for (char *c = buf + 1;; c++) {
		if (*c != '/' && *c != '\0')
			continue;
		char saved = *c;

		*c = '\0';
		if (mkdir(buf, 0755) != 0 && errno != EEXIST)
			return -1;
		*c = saved;
		if (saved == '\0')
			break;
	}
	if (stat(path, &st) != 0)
		return -1;
	return S_ISDIR(st.st_mode) ? 0 : (errno = ENOTDIR, -1);
}

/* Go's findExecutable: a regular file (not a directory) with an execute bit. */
static int executable(const char *path)
{
	struct stat st;

	if (stat(path, &st) != 0)
		return -1;
	if (S_ISDIR(st.st_mode) || !(st.st_mode & 0111))
		return errno = EACCES, -1;
	return 0;
}

/* What execve will run: runc 1.1's check before its exec FIFO wait (exec.LookPath in the
 * spec's PATH, then Eaccess), with its messages. An error ends the init: NotFound over the
 * gate, or 127/126 without one. */
static const char *look_path(const char *file)
{
	static char found[PATH_MAX_LEN];
	const char *path = getenv("PATH");

	if (strchr(file, '/')) {
		if (executable(file) != 0) {
			int err = errno;

			if (err == EACCES)
				die("notfound", 126, "exec: \"%s\": permission denied", file);
			die("notfound", 127, "exec: \"%s\": stat %s: %s", file, file, go_error(err));
		}
		snprintf(found, sizeof(found), "%s", file);
	} else {
		const char *dir = path ? path : DEFAULT_PATH;

		for (;;) {
			size_t len = strcspn(dir, ":");

			/* An empty entry is the working directory (Go, execvp). */
			if (snprintf(found, sizeof(found), "%.*s/%s", (int)(len ? len : 1),
				     len ? dir : ".", file) < (int)sizeof(found) &&
			    executable(found) == 0)
				break;
			if (dir[len] == '\0')
				die("notfound", 127, "exec: \"%s\": executable file not found in $PATH",
				    file);
			dir += len + 1;
		}
	}
	if (faccessat(AT_FDCWD, found, X_OK, AT_EACCESS) != 0)
		die("notfound", 126, "exec %s: %s", found, go_error(errno));
	return found;
}

int main(int argc, char *argv[])
{
	struct process p;
	struct sock_fprog filter = {0};
	char **program;
	const char *path;
	int exec_fd;

	if (argc > 1)
		dir = argv[1];
	close_from(3); /* LXC hands its log file over as -o /proc/1/fd/N */
	program = read_argv();
	read_process(&p);
	if (p.gate)
		open_gate(p.gate == 2);
	/* The create-time hooks (prestart, createRuntime, createContainer) run before the set-up,
	 * as runc runs them before its init's last steps: a hook may put the program or the cwd
	 * in place (e.g. a GPU hook mounting tools). */
	if (p.gate && p.hooks)
		wait_for("setup");
	if (p.seccomp)
		filter = read_filter();
	null_stdio();
	/* LXC made this process a session leader already when it has a terminal; otherwise
	 * setsid() makes it one, as runc's init is (its own session). */
	setsid();
	if (isatty(STDIN_FILENO))
		ioctl(STDIN_FILENO, TIOCSCTTY, 0);
	/* The runtime holds the read end; without a reader (the runtime is gone) there is
	 * nobody to tell. */
	exec_fd = open(in_dir("exec"), O_WRONLY | O_NONBLOCK | O_CLOEXEC);
	(void)exec_fd;

	/* linux.rootfsPropagation, after LXC's pivot_root (before it, "shared" made the pivot
	 * fail with EINVAL) and after LXC's own remount of the new root as shared: runc sets it
	 * at the same point (libcontainer/rootfs_linux.go, rootfsParentMountPrivate/pivot). */
	if (p.propagation && mount(NULL, "/", NULL, p.propagation, NULL) != 0)
		fail("setting the propagation of /");
	for (int i = 0; i < p.nrlimits; i++) {
		const struct rlimit *l = &p.rlimits[i].limit;

		if (setrlimit(p.rlimits[i].resource, l) != 0)
			die("invalid", 1, "process.rlimits: %s (soft %llu, hard %llu): setrlimit: %s",
			    p.rlimits[i].name, (unsigned long long)l->rlim_cur,
			    (unsigned long long)l->rlim_max, strerror(errno));
	}
	if (p.seccomp && !p.nnp)
		load_filter(&filter, p.seccomp_flags);
	if (p.caps) {
		int last = last_cap();

		/* Only what is still there: lxc-attach gives an exec the container's bounding set
		 * already, and dropping needs CAP_SETPCAP, which that set may lack (measured). */
		for (int cap = 0; cap <= last && cap < 64; cap++) {
			if (!(p.bounding & (1ULL << cap)) && prctl(PR_CAPBSET_READ, cap, 0, 0, 0) == 1 &&
			    prctl(PR_CAPBSET_DROP, cap, 0, 0, 0) != 0)
				die("invalid", 1, "process.capabilities.bounding: dropping capability "
				    "%d: %s", cap, strerror(errno));
		}
		if (prctl(PR_SET_KEEPCAPS, 1, 0, 0, 0) != 0)
			fail("PR_SET_KEEPCAPS");
	}
	/* The container's cwd is made when it is missing, as root, before the user switch
	 * (runc: os.MkdirAll(cwd, 0755) while preparing the root); an exec's is not (runc's
	 * neither). Entered before the uid change, as root; again after it when root could not
	 * (runc does both). */
	if (p.gate && p.cwd && mkdir_all(p.cwd) != 0)
		die("precondition", 1, "process.cwd \"%s\": mkdir %s: %s", p.cwd, p.cwd,
		    strerror(errno));
	int cwd_done = !p.cwd || chdir(p.cwd) == 0;

	/* In a user namespace whose setgroups is "deny", only an empty list is allowed: skip.
	 * EINVAL: an id the user namespace does not map (runc: "cannot set uid to unmapped user
	 * in user namespace"). */
	if (setgroups(p.ngroups, p.groups) != 0 && !(errno == EPERM && p.ngroups == 0))
		die("invalid", 1, "process.user.additionalGids: setgroups: %s%s", strerror(errno),
		    errno == EINVAL ? " (a gid not mapped in the user namespace)" : "");
	if (setresgid(p.gid, p.gid, p.gid) != 0) {
		if (errno == EINVAL)
			die("invalid", 1, "process.user.gid %u: cannot set gid to unmapped user in "
			    "user namespace", p.gid);
		die("invalid", 1, "process.user.gid %u: setresgid: %s", p.gid, strerror(errno));
	}
	if (setresuid(p.uid, p.uid, p.uid) != 0) {
		if (errno == EINVAL)
			die("invalid", 1, "process.user.uid %u: cannot set uid to unmapped user in "
			    "user namespace", p.uid);
		die("invalid", 1, "process.user.uid %u: setresuid: %s", p.uid, strerror(errno));
	}
	if (!cwd_done && chdir(p.cwd) != 0)
		die("precondition", 1, "chdir to cwd (\"%s\") set in config.json failed: %s", p.cwd,
		    strerror(errno));
	if (p.caps) {
		if (prctl(PR_SET_KEEPCAPS, 0, 0, 0, 0) != 0)
			fail("PR_SET_KEEPCAPS");
		set_caps(&p);
	}
	path = look_path(program[0]);
	if (p.nnp && prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0)
		fail("PR_SET_NO_NEW_PRIVS");
	reset_signals();
	if (p.seccomp && p.nnp)
		load_filter(&filter, p.seccomp_flags);
	if (p.gate)
		ready_and_wait();
	execve(path, program, environ);
	{
		int err = errno;

		fprintf(stderr, "lxcri-init: exec %s: %s\n", program[0], strerror(err));
		_exit(err == ENOENT ? 127 : 126);
	}
}
