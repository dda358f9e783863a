/* spawn.h — worker child processes (spawn.c). */
#ifndef TC_DAEMON_SPAWN_H
#define TC_DAEMON_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include "../common/status.h"

/* Starts argv[0] with argv, in a process group of its own; waits up to
 * ready_timeout_s for its first stdout line (copied to line), giving up
 * early once *stop (when not NULL) is set. The child gets SIGKILL when the
 * thread that called this exits (PR_SET_PDEATHSIG): stop it before that
 * thread ends. On failure the child is gone. Kills and stops signal the
 * child's whole group. */
tc_status tc_spawn(char *const argv[], double ready_timeout_s, const int *stop, pid_t *pid, char *line, size_t n);
/* A SIGTERM/SIGINT during tconstd's start-up: tc_spawn and the waits for
 * workers to answer give up at once (process-wide, never reset). */
void tc_spawn_cancel(void);
int tc_spawn_cancelled(void);
/* 1 when pid has exited (reaped; *status set), 0 while it runs. What is
 * left in its process group (a wrapper's children) is killed first. */
int tc_child_exited(pid_t pid, int *status);
void tc_child_kill(pid_t pid);
/* SIGTERM, then SIGKILL after grace_s; reaped. */
void tc_child_stop(pid_t pid, double grace_s);
/* The same for n children at once (one grace period for all); every
 * pids[i] ends -1. */
void tc_children_stop(pid_t *pids, int n, double grace_s);

#endif
