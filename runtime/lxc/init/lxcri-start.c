/*
 * lxcri-start: the host-side monitor of every container (what `lxc-start -F` is, but with the
 * container's exit status as its own).
 *
 * Why it exists: the runtime wants the user's program to be PID 1 of the container (runc's
 * behaviour), so the container is started in LXC's "start" mode with lxc.init.cmd naming the
 * project's exec-only init (lxcri-init.c), which applies the process settings and execve()s
 * the program. The LXC tool for that mode, lxc-start, always exits 0 (measured), and the
 * container's init is the child of LXC's monitor, so nobody else can wait for it. liblxc does
 * know the status: __lxc_start() stores it in c->error_num (src/lxc/start.c: signal_handler()
 * sets handler->exit_status to `si_status << 8` for an exit and `si_status << 8 | 0x7f` for a
 * signal death, from a waitid(WNOWAIT) on the init). This program is lxc-start -F reduced to
 * that: it runs the container in the foreground, as this process, and exits with the status
 * decoded as a shell does (0-255 for an exit, 128 + signal for a signal death).
 *
 * Usage: lxcri-start LXCPATH NAME LOGFILE LOGLEVEL
 * Exit status: the program's; 255 with a message on stderr when LXC could not start the
 * container at all (details in LOGFILE).
 */
#define _GNU_SOURCE
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <lxc/lxccontainer.h>

#define FAILED 255

static int decode(int status)
{
	int low = status & 0x7f, high = (status >> 8) & 0xff;

	if (low == 0)
		return high;          /* exited: si_status << 8 */
	if (low == 0x7f)
		return 128 + high;    /* LXC's encoding of a signal death: si_status << 8 | 0x7f */
	return 128 + low;         /* a plain wait(2) status of a signal death */
}

int main(int argc, char *argv[])
{
	struct lxc_container *c;
	struct lxc_log log;
	int status;

	if (argc != 5) {
		fprintf(stderr, "usage: lxcri-start LXCPATH NAME LOGFILE LOGLEVEL\n");
		return FAILED;
	}
	/* quiet: LXC's own messages stay in the log, off the container's stderr (which is
	 * this process's stderr, lxc.console.path = none). */
	log = (struct lxc_log){.name = argv[2], .lxcpath = argv[1], .file = argv[3],
			       .level = argv[4], .prefix = "lxcri-start", .quiet = true};
	if (lxc_log_init(&log) != 0)
		fprintf(stderr, "lxcri-start: cannot open the log %s\n", argv[3]);
	c = lxc_container_new(argv[2], argv[1]);
	if (!c || !c->is_defined(c)) {
		fprintf(stderr, "lxcri-start: container %s is not defined in %s\n", argv[2], argv[1]);
		return FAILED;
	}
	c->want_daemonize(c, false);
	/* A container killed right after the gate opened closes LXC's sync socket while the
	 * monitor still writes to it: SIGPIPE killed the monitor (status 141, cgroups left,
	 * measured). lxcri-init resets every disposition before its execve, so the program does
	 * not inherit the SIG_IGN. */
	signal(SIGPIPE, SIG_IGN);
	/* useinit 0, no argv: LXC execs lxc.init.cmd (the project's init) as PID 1. */
	if (!c->start(c, 0, NULL)) {
		fprintf(stderr, "lxcri-start: LXC could not start container %s (see %s)\n",
			argv[2], argv[3]);
		lxc_container_put(c);
		return FAILED;
	}
	status = c->error_num;
	lxc_container_put(c);
	return decode(status);
}
