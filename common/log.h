/* log.h — leveled logging, filtered by level before any formatting.
 *
 * TC_LOG_LEVEL=error|warn|info|debug|trace (default warn for the CLI),
 * TC_LOG_FORMAT=json emits one JSON object per line for Kubernetes,
 * TC_LOG_SUBSYS=engine,workers keeps the debug and trace records of those
 * subsystems only ("^rpc": all but rpc; errors, warnings, info always). */
#ifndef TC_LOG_H
#define TC_LOG_H

typedef enum { TC_LOG_ERROR = 0, TC_LOG_WARN, TC_LOG_INFO, TC_LOG_DEBUG, TC_LOG_TRACE } tc_log_level;

extern int tc_log_level_cur; /* read by the macro; set by tc_log_init */

void tc_log_init(void); /* reads TC_LOG_LEVEL / TC_LOG_FORMAT */
void tc_log_set_level(tc_log_level l);
void tc_log_set_subsys(const char *list); /* TC_LOG_SUBSYS's syntax; NULL or "": all */
int tc_log_subsys_on(tc_log_level l, const char *subsys); /* would a record of subsys at l be written? */
int tc_log_parse_level(const char *s, tc_log_level *out);
/* A daemon's --log-level / --log-format: prints "<prog>: error: ..." and
 * returns -1 when either (or TC_LOG_LEVEL / TC_LOG_FORMAT) is not valid. An
 * empty value means TC_LOG_LEVEL / TC_LOG_FORMAT, else info / text. */
int tc_log_configure(const char *prog, const char *level, const char *format);
void tc_log_write(tc_log_level l, const char *subsys, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

#define TC_LOG(level, subsys, ...)                                            \
    do {                                                                      \
        if ((int)(level) <= tc_log_level_cur)                                 \
            tc_log_write((level), (subsys), __FILE__, __LINE__, __VA_ARGS__); \
    } while (0)

#endif
