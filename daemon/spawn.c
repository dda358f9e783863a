/* spawn.c — child worker processes: fork/exec with the death signal set
 * (a worker never outlives tconstd), wait for the one-line "ready" banner
 * on its stdout, reap, kill. Not here: what the worker is for
 * (worker_remote.c). */
#include "spawn.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../common/clock.h"

static atomic_int g_cancel; /* tc_spawn_cancel: a signal during the start-up */

void tc_spawn_cancel(void) { atomic_store(&g_cancel, 1); }
int tc_spawn_cancelled(void) { return atomic_load(&g_cancel); }

extern char **environ;

/* The worker's environment: tconstd's, less the knobs both programs read
 * under the same name but mean differently there: TCONST_CONFIG (tconstd's
 * config file: its keys are not a worker's) and TCONST_MAX_MESSAGE_BYTES
 * (the API's request limit, not the data plane's). Every other knob the
 * worker takes from its flags (listen, model, device, threads, log) or is
 * the operator's to set for spawned workers (TCONST_PEER_TIMEOUT, ...).
 * Built before fork: after it only async-signal-safe calls are allowed. */
static char **worker_env(void) {
    static const char *drop[] = {"TCONST_CONFIG=", "TCONST_MAX_MESSAGE_BYTES="};
    size_t n = 0;
    while (environ && environ[n]) n++;
    char **env = malloc((n + 1) * sizeof *env);
    if (!env) return NULL;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        int keep = 1;
        for (size_t d = 0; d < sizeof drop / sizeof drop[0]; d++)
            keep &= strncmp(environ[i], drop[d], strlen(drop[d])) != 0;
        if (keep) env[k++] = environ[i];
    }
    env[k] = NULL;
    return env;
}

tc_status tc_spawn(char *const argv[], double ready_timeout_s, const int *stop, pid_t *pid_out, char *line,
                   size_t n) {
    int p[2];
    *pid_out = -1;
    char **env = worker_env();
    if (!env) return TC_FAIL(TC_ERR_NOMEM, "spawn %s: out of memory", argv[0]);
    if (pipe2(p, O_CLOEXEC) != 0) {
        free(env);
        return TC_FAIL(TC_ERR_IO, "spawn %s: pipe: %s", argv[0], strerror(errno));
    }
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]), close(p[1]);
        free(env);
        return TC_FAIL(TC_ERR_IO, "spawn %s: fork: %s", argv[0], strerror(errno));
    }
    if (pid == 0) {
        /* child: die with the parent; stdout is the banner pipe; signals
         * the parent blocked are unblocked again */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        /* a process group of its own: a signal to tconstd's group (Ctrl-C
         * in a terminal, kill -- -PGID) reaches tconstd, which drains and
         * then stops its workers, not the workers mid-drain; and tconstd's
         * stop reaches whatever a --worker-binary wrapper started */
        setpgid(0, 0);
        signal(SIGTERM, SIG_DFL); /* tconstd's handlers write to its signal pipe: not the child's */
        signal(SIGINT, SIG_DFL);
        struct sigaction hup; /* the same for SIGHUP, unless ignored (nohup): that stays */
        if (sigaction(SIGHUP, NULL, &hup) == 0 && hup.sa_handler != SIG_IGN) signal(SIGHUP, SIG_DFL);
        sigset_t all;
        sigemptyset(&all);
        sigprocmask(SIG_SETMASK, &all, NULL);
        signal(SIGPIPE, SIG_DFL);
        dup2(p[1], 1);
        execve(argv[0], argv, env);
        fprintf(stderr, "tconstd: cannot execute %s: %s\n", argv[0], strerror(errno));
        _exit(127);
    }
    close(p[1]);
    free(env);
    setpgid(pid, pid); /* as the child does: whichever runs first */
    size_t got = 0;
    line[0] = 0;
    double end = tc_now_s() + ready_timeout_s;
    tc_status st = TC_OK;
    for (;;) {
        double left = end - tc_now_s();
        if (left <= 0) {
            st = TC_FAIL(TC_ERR_IO, "worker %s did not report ready within %.0f s", argv[0], ready_timeout_s);
            break;
        }
        if (tc_spawn_cancelled()) {
            st = TC_FAIL(TC_ERR_IO, "worker %s: start-up cancelled (a signal)", argv[0]);
            break;
        }
        if (stop && __atomic_load_n(stop, __ATOMIC_RELAXED)) {
            st = TC_FAIL(TC_ERR_IO, "worker %s: start abandoned (tconstd is stopping)", argv[0]);
            break;
        }
        struct pollfd pf = {p[0], POLLIN, 0};
        int r = poll(&pf, 1, left > 0.2 ? 201 : (int)(left * 1000) + 1); /* slices: a cancel is seen */
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) continue;
        ssize_t k = read(p[0], line + got, n - 1 - got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) {
            /* its stdout closed: it exited (reaped here), or it runs on with
             * stdout elsewhere (a wrapper that redirected it) and can never
             * report ready: at most a second to tell which, never a
             * blocking wait */
            int status = 0, exited = 0;
            for (double t_end = tc_now_s() + 1.0; !(exited = tc_child_exited(pid, &status)) && tc_now_s() < t_end;) {
                struct timespec ts = {0, 10 * 1000 * 1000};
                nanosleep(&ts, NULL);
            }
            if (exited) {
                pid = -1;
                st = TC_FAIL(TC_ERR_IO, "worker %s exited before it was ready (%s %d; its error is in the log above)",
                             argv[0], WIFEXITED(status) ? "exit code" : "signal",
                             WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
            } else
                st = TC_FAIL(TC_ERR_IO, "worker %s closed its stdout before its ready line (a wrapper must leave the "
                             "worker's stdout to tconstd, and exec it)", argv[0]);
            break;
        }
        got += (size_t)k;
        line[got] = 0;
        char *nl = strchr(line, '\n');
        if (nl) {
            *nl = 0;
            break;
        }
        if (got >= n - 1) break;
    }
    close(p[0]); /* the worker prints nothing more on stdout */
    if (st != TC_OK) {
        if (pid > 0) tc_child_kill(pid);
        return st;
    }
    *pid_out = pid;
    return TC_OK;
}

int tc_child_exited(pid_t pid, int *status) {
    if (pid <= 0) return 1;
    siginfo_t si;
    memset(&si, 0, sizeof si);
    /* seen exited but not reaped (WNOWAIT): its group id cannot be reused
     * yet, so what is left in the group (a wrapper's child) is killed
     * before the reap */
    if (waitid(P_PID, (id_t)pid, &si, WEXITED | WNOHANG | WNOWAIT) != 0) {
        if (errno != ECHILD) return 0;
        if (status) *status = 0;
        return 1; /* reaped elsewhere */
    }
    if (si.si_pid != pid) return 0; /* still running */
    kill(-pid, SIGKILL);
    int s = 0;
    while (waitpid(pid, &s, 0) < 0 && errno == EINTR) {
    }
    if (status) *status = s;
    return 1;
}

/* the worker's process group (its own since tc_spawn), so what a wrapper
 * started goes too; the pid alone where the group is gone */
static void signal_child(pid_t pid, int sig) {
    if (kill(-pid, sig) != 0) kill(pid, sig);
}

void tc_child_kill(pid_t pid) {
    if (pid <= 0) return;
    signal_child(pid, SIGKILL);
    while (waitpid(pid, NULL, 0) < 0 && errno == EINTR) {
    }
}

void tc_children_stop(pid_t *pids, int n, double grace_s) {
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) signal_child(pids[i], SIGTERM);
    double end = tc_now_s() + grace_s;
    for (;;) {
        int left = 0;
        for (int i = 0; i < n; i++)
            if (pids[i] > 0 && tc_child_exited(pids[i], NULL)) pids[i] = -1;
            else left += pids[i] > 0;
        if (!left || tc_now_s() >= end) break;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++)
        if (pids[i] > 0) tc_child_kill(pids[i]), pids[i] = -1;
}

void tc_child_stop(pid_t pid, double grace_s) {
    if (pid <= 0) return;
    signal_child(pid, SIGTERM);
    double end = tc_now_s() + grace_s;
    while (tc_now_s() < end) {
        if (tc_child_exited(pid, NULL)) return;
        struct timespec ts = {0, 20 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    tc_child_kill(pid);
}
