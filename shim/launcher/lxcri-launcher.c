/*
 * containerd-shim-proxmox-v2 as containerd executes it: a small client of the zygote.
 *
 * containerd runs the shim binary twice per task, for `start` and for `delete`
 * (shim-protocol.md 2.3, 2.7), and waits for each. A Python interpreter needs ~6 ms to start
 * before it runs a line (docs/benchmarks.md, 2026-12-06), against ~1 ms for the runc shim's Go
 * binary to exec. This program has no logic of the shim's own: it hands the invocation
 * (arguments, environment, working directory, umask and the three standard descriptors) to the
 * zygote's relay socket (shim/zygote.py, _Relay), which runs the action in a fork of its
 * already-imported interpreter and sends back the action's wait status; the launcher then ends
 * the same way (exit code, or death by the same signal).
 *
 * When no zygote answers, or it declines (it serves other code than this launcher's, or it is
 * shutting down), the launcher executes the Python launcher LXCRI_FALLBACK with the same
 * arguments: always correct, only slower; that one also starts a zygote for the next run.
 * Nothing of the action has run by then: the zygote answers `r` only once it forked the action.
 *
 * Wire format (shim/zygote.py parses it; both sides are this project's):
 *   request  "LXCRI1\0" umask-octal "\0" cwd "\0" argc "\0" argv[0..argc) "\0"... env "\0"...,
 *            then EOF (shutdown); the first sendmsg carries fds 0, 1, 2 (SCM_RIGHTS, cmsg(3));
 *   answer   "s" (run it yourself) | "r" then the wait status as a native 4-byte int.
 *
 * Built by packaging/setup.sh (and build-deb.sh) with -DLXCRI_FALLBACK=<path of the Python
 * launcher> and -DLXCRI_RELAY=<relay socket file name>; the name comes from
 * shim.zygote_client.relay_name, so it is computed in one place.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef LXCRI_FALLBACK
#error "LXCRI_FALLBACK (the Python launcher's path) must be defined"
#endif
#ifndef LXCRI_RELAY
#error "LXCRI_RELAY (the relay socket's file name) must be defined"
#endif

/* runtime/paths.py: $PROXMOX_LXCRI_ROOT when set and not empty, else this. */
#define DEFAULT_ROOT "/run/proxmox-lxcri"
/* How long the zygote may take to accept the invocation before the launcher runs it itself
 * (zygote_client.connect waits as long). */
#define ANSWER_TIMEOUT_S 5

extern char **environ;

static void fallback(char **argv) __attribute__((noreturn));
static void fallback(char **argv)
{
    execv(LXCRI_FALLBACK, argv);
    fprintf(stderr, "containerd-shim-proxmox-v2: cannot execute %s: %s\n", LXCRI_FALLBACK,
            strerror(errno));
    _exit(127);
}

struct buf {
    char *data;
    size_t len, cap;
};

static int put(struct buf *b, const char *s, size_t n)
{
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (b->len + n + 1 > cap)
            cap *= 2;
        char *data = realloc(b->data, cap);
        if (!data)
            return -1;
        b->data = data;
        b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len++] = '\0';
    return 0;
}

static int put_str(struct buf *b, const char *s)
{
    return put(b, s, strlen(s));
}

/* The invocation, encoded as the header comment says; -1 when it cannot be. */
static int encode(struct buf *b, int argc, char **argv)
{
    char num[32];
    mode_t mask = umask(0);
    umask(mask);
    char *cwd = getcwd(NULL, 0);
    if (!cwd)
        return -1;
    int rc = put_str(b, "LXCRI1");
    snprintf(num, sizeof(num), "%o", (unsigned)mask);
    rc |= put_str(b, num);
    rc |= put_str(b, cwd);
    free(cwd);
    snprintf(num, sizeof(num), "%d", argc);
    rc |= put_str(b, num);
    for (int i = 0; i < argc; i++)
        rc |= put_str(b, argv[i]);
    for (char **e = environ; *e; e++)
        rc |= put_str(b, *e);
    return rc ? -1 : 0;
}

static int dial(void)
{
    struct sockaddr_un addr = {.sun_family = AF_UNIX};
    const char *root = getenv("PROXMOX_LXCRI_ROOT");
    if (!root || !*root)
        root = DEFAULT_ROOT;
    int n = snprintf(addr.sun_path, sizeof(addr.sun_path), "%s/%s", root, LXCRI_RELAY);
    if (n < 0 || (size_t)n >= sizeof(addr.sun_path))
        return -1;
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -1;
    if (connect(fd, (struct sockaddr *)&addr, sizeof(addr)) < 0) {
        close(fd);
        return -1;
    }
    return fd;
}

/* Send the request, the standard descriptors with its first bytes; -1 on failure. */
static int send_request(int fd, const struct buf *b)
{
    int fds[3] = {0, 1, 2};
    union {
        char buf[CMSG_SPACE(sizeof(fds))];
        struct cmsghdr align;
    } control;
    memset(&control, 0, sizeof(control));
    struct iovec iov = {.iov_base = b->data, .iov_len = b->len};
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = control.buf,
                         .msg_controllen = sizeof(control.buf)};
    struct cmsghdr *cmsg = CMSG_FIRSTHDR(&msg);
    cmsg->cmsg_level = SOL_SOCKET;
    cmsg->cmsg_type = SCM_RIGHTS;
    cmsg->cmsg_len = CMSG_LEN(sizeof(fds));
    memcpy(CMSG_DATA(cmsg), fds, sizeof(fds));
    ssize_t n;
    do
        n = sendmsg(fd, &msg, MSG_NOSIGNAL);
    while (n < 0 && errno == EINTR);
    if (n <= 0)
        return -1;
    size_t off = (size_t)n;
    while (off < b->len) {
        n = send(fd, b->data + off, b->len - off, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return -1;
        off += (size_t)n;
    }
    return shutdown(fd, SHUT_WR);
}

/* Read exactly n bytes; 0 when all came, -1 on EOF, error or timeout. */
static int read_all(int fd, void *out, size_t n)
{
    size_t off = 0;
    while (off < n) {
        ssize_t r = read(fd, (char *)out + off, n - off);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            return -1;
        off += (size_t)r;
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *zygote = getenv("PROXMOX_LXCRI_ZYGOTE");
    if (zygote && strcmp(zygote, "0") == 0)
        fallback(argv);
    int fd = dial();
    if (fd < 0)
        fallback(argv);
    struct buf b = {0};
    if (encode(&b, argc, argv) < 0 || send_request(fd, &b) < 0) {
        close(fd);
        fallback(argv);
    }
    free(b.data);
    struct timeval tv = {.tv_sec = ANSWER_TIMEOUT_S};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char answer;
    if (read_all(fd, &answer, 1) < 0 || answer != 'r') {
        /* Declined, or no answer in time: closing the connection first tells the zygote not
         * to run it any more (the action checks for a hang-up before it answers `r`). An
         * action that answered just as this gave up still runs, and so does the fallback:
         * both actions are idempotent (a second `start` finds the task's socket served, a
         * second `delete` finds nothing left), and the zygote answers within microseconds
         * unless the node is stalled for seconds. */
        close(fd);
        fallback(argv);
    }
    struct timeval none = {0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &none, sizeof(none));
    int status;
    if (read_all(fd, &status, sizeof(status)) < 0) {
        fprintf(stderr, "containerd-shim-proxmox-v2 %s: the zygote went away while it ran the "
                "action; its outcome is unknown\n", argc > 1 ? argv[argc - 1] : "");
        return 1;
    }
    if (WIFSIGNALED(status)) {
        /* End as the action did, as a shell would not: containerd sees the same signal. */
        int sig = WTERMSIG(status);
        sigset_t set;
        signal(sig, SIG_DFL);
        sigemptyset(&set);
        sigaddset(&set, sig);
        sigprocmask(SIG_UNBLOCK, &set, NULL);
        raise(sig);
        return 128 + sig;
    }
    return WIFEXITED(status) ? WEXITSTATUS(status) : 1;
}
