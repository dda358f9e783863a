/* spawn.h — worker child processes (spawn.c). */
#ifndef TC_DAEMON_SPAWN_H
#define TC_DAEMON_SPAWN_H

#include <stddef.h>
#include <sys/types.h>

#include "../common/status.h"

/* Starts argv[0] with argv; waits up to ready_timeout_s for its first
 * stdout line (copied to line). The child gets SIGKILL when this process
 * dies. On failure the child is gone. */
tc_status tc_spawn(char *const argv[], double ready_timeout_s, pid_t *pid, char *line, size_t n);
/* A SIGTERM/SIGINT during tconstd's start-up: tc_spawn and the waits for
 * workers to answer give up at once (process-wide, never reset). */
void tc_spawn_cancel(void);
int tc_spawn_cancelled(void);
/* 1 when pid has exited (reaped; *status set), 0 while it runs. */
int tc_child_exited(pid_t pid, int *status);
void tc_child_kill(pid_t pid);
/* SIGTERM, then SIGKILL after grace_s; reaped. */
void tc_child_stop(pid_t pid, double grace_s);

#endif
