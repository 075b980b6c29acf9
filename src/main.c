/* main.c -- command line, configuration load and reload, workers, signals.
 * SPDX-License-Identifier: MIT */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <malloc.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "admin.h"
#include "common.h"
#include "conf.h"
#include "config.h"
#include "runtime.h"
#include "worker.h"

typedef struct app {
    struct event_base *base;
    lua_State *L;
    lg_conf_t *conf;
    char *dump;
    lg_worker_t *workers;
    int nworkers;
    lg_admin_t *admin;
    const char *file; /* NULL for -c */
    struct stat st;
    int ready, stopping;
    struct event *sigterm, *sigint, *sighup, *watch;
} app_t;

static const char *usage = "usage: lunagate [-f FILE | -c YAML] [--validate-only]\n"
                           "  -f, --file FILE       configuration file ('-' reads standard input)\n"
                           "  -c, --config YAML     inline configuration\n"
                           "      --validate-only   check the configuration and exit\n"
                           "  -V                    print the version\n"
                           "      --version         print build information as JSON\n"
                           "  -h, --help            this help\n"
                           "With neither -f nor -c, /config/config.yaml is used when it exists.\n";

/* Loads, validates and compiles configuration text. Returns LG_OK with *conf and *dump
 * set, or LG_ERR with err filled; on error nothing changes. */
static int load(app_t *app, const char *text, size_t len, const char *name, lg_conf_t **conf,
                char **dump, lg_err_t *err)
{
    lua_State *L = app->L;
    int top = lua_gettop(L);
    if (lg_config_load(L, text, len, name, err) != LG_OK)
        return LG_ERR;
    lg_conf_t *c = lg_conf_compile(L, name, text, len, err);
    if (!c) {
        char m[sizeof(err->msg)];
        memcpy(m, err->msg, sizeof(m));
        lg_err_set(err, 0, "%.200s: %.300s", name, m);
        lua_settop(L, top);
        return LG_ERR;
    }
    if (lg_runtime_check(L, c, err) != LG_OK) {
        lg_conf_unref(c);
        lua_settop(L, top);
        return LG_ERR;
    }
    /* config_dump: JSON with secrets redacted */
    lua_getglobal(L, "require");
    lua_pushliteral(L, "lunagate.dump");
    if (lua_pcall(L, 1, 1, 0) == LUA_OK) {
        lua_pushvalue(L, top + 1);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_isstring(L, -1))
            *dump = lg_xstrdup(lua_tostring(L, -1));
    }
    lua_settop(L, top);
    if (!*dump)
        *dump = lg_xstrdup("{}");
    *conf = c;
    return LG_OK;
}

static int config_changed(app_t *app)
{
    struct stat st;
    if (!app->file || strcmp(app->file, "-") == 0 || stat(app->file, &st) != 0)
        return 0;
    int changed = st.st_ino != app->st.st_ino || st.st_mtim.tv_sec != app->st.st_mtim.tv_sec ||
                  st.st_mtim.tv_nsec != app->st.st_mtim.tv_nsec || st.st_size != app->st.st_size ||
                  st.st_dev != app->st.st_dev;
    app->st = st;
    return changed;
}

static void reload(app_t *app, const char *why)
{
    lg_err_t err = {0};
    size_t len;
    if (!app->file || strcmp(app->file, "-") == 0) {
        lg_log(LG_LOG_WARN, "config", "reload (%s) ignored: configuration did not come from a file",
               why);
        return;
    }
    char *text = lg_config_read_file(app->file, &len, &err);
    lg_conf_t *c = NULL;
    char *dump = NULL;
    if (!text || load(app, text, len, app->file, &c, &dump, &err) != LG_OK) {
        lg_log(LG_LOG_ERR, "config", "reload (%s) failed, keeping the running configuration: %s",
               why, err.msg);
        lg_runtime_reload_outcome(0);
        free(text);
        return;
    }
    free(text);
    if (lg_workers_reload(app->workers, app->nworkers, c, &err) != LG_OK) {
        lg_log(LG_LOG_ERR, "config", "reload (%s) failed, keeping the running configuration: %s",
               why, err.msg);
        lg_runtime_reload_outcome(0);
        lg_conf_unref(c);
        free(dump);
        return;
    }
    lg_conf_unref(app->conf);
    app->conf = c;
    free(app->dump);
    app->dump = dump;
    lg_runtime_reload_outcome(1);
    lg_log(LG_LOG_INFO, "config", "reloaded %s (%s)", app->file, why);
}

static void stop(app_t *app)
{
    if (app->stopping)
        return;
    app->stopping = 1;
    app->ready = 0;
    lg_log(LG_LOG_INFO, "main", "draining (deadline %d ms)", app->conf->drain_ms);
    event_base_loopexit(app->base, NULL);
}

static void signal_cb(evutil_socket_t sig, short what, void *arg)
{
    app_t *app = arg;
    LG_UNUSED(what);
    if (sig == SIGHUP)
        reload(app, "SIGHUP");
    else
        stop(app);
}

static void watch_cb(evutil_socket_t fd, short what, void *arg)
{
    app_t *app = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    /* stat() follows symlinks, so a Kubernetes ConfigMap's ..data swap shows up as a new
     * inode even though the path never changes. */
    if (config_changed(app))
        reload(app, "file changed");
}

static int op_ready(void *arg)
{
    app_t *app = arg;
    return app->ready && lg_workers_running(app->workers, app->nworkers);
}

static void op_dump(void *arg, struct evbuffer *out)
{
    app_t *app = arg;
    evbuffer_add(out, app->dump, strlen(app->dump));
}

static void quit_cb(evutil_socket_t fd, short what, void *arg)
{
    LG_UNUSED(fd);
    LG_UNUSED(what);
    stop(arg);
}

static void op_quit(void *arg)
{
    app_t *app = arg;
    /* let the 200 reach the caller before the loop stops */
    struct timeval tv = {0, 50000};
    event_base_once(app->base, -1, EV_TIMEOUT, quit_cb, app, &tv);
}

static const char *op_metrics(void *arg, const char *accept, struct evbuffer *out)
{
    LG_UNUSED(arg);
    return lg_runtime_metrics(accept, out);
}

static int nprocs(void)
{
    const char *cpu = getenv("CPU_LIMIT");
    long n = cpu ? atol(cpu) : 0;
    if (n <= 0)
        n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)(n > 64 ? 64 : n) : 1;
}

int main(int argc, char **argv)
{
    static struct option opts[] = {
        {"file", required_argument, 0, 'f'},    {"config", required_argument, 0, 'c'},
        {"validate-only", no_argument, 0, 'v'}, {"version", no_argument, 0, 'J'},
        {"help", no_argument, 0, 'h'},          {0, 0, 0, 0}};
    /* Spans are allocated by a worker and freed, a batch at a time, by the exporter thread:
     * with glibc's default 128 KiB trim threshold each batch gave the worker's heap back to
     * the kernel, and the next requests faulted it in again (~2 us of system time per
     * traced request). Keep freed memory for reuse instead. */
    mallopt(M_TRIM_THRESHOLD, 64 << 20);
    const char *file = NULL, *inline_conf = NULL;
    int validate = 0, c;
    app_t app;
    lg_err_t err = {0};

    memset(&app, 0, sizeof(app));
    while ((c = getopt_long(argc, argv, "f:c:Vh", opts, NULL)) != -1) {
        switch (c) {
        case 'f':
            file = optarg;
            break;
        case 'c':
            inline_conf = optarg;
            break;
        case 'v':
            validate = 1;
            break;
        case 'V':
            printf("lunagate %s\n", LG_VERSION);
            return 0;
        case 'J':
            printf("{\"version\":\"%s\",\"lua\":\"%s\",\"libevent\":\"%s\"}\n", LG_VERSION,
                   LUA_RELEASE, event_get_version());
            return 0;
        case 'h':
            fputs(usage, stdout);
            return 0;
        default:
            fputs(usage, stderr);
            return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "lunagate: unexpected argument '%s'\n%s", argv[optind], usage);
        return 2;
    }
    if (file && inline_conf) {
        fprintf(stderr, "lunagate: use either -f or -c, not both\n");
        return 2;
    }
    if (!file && !inline_conf) {
        if (access("/config/config.yaml", R_OK) == 0) {
            file = "/config/config.yaml";
        } else {
            fprintf(stderr, "lunagate: no configuration: pass -f FILE or -c YAML\n");
            return 2;
        }
    }
    lg_runtime_set_home(argv[0]);

    app.L = lg_runtime_new_state(&err);
    if (!app.L) {
        fprintf(stderr, "lunagate: %s\n", err.msg);
        return 1;
    }
    char *text;
    size_t len;
    if (file) {
        text = lg_config_read_file(file, &len, &err);
        if (!text) {
            fprintf(stderr, "lunagate: %s\n", err.msg);
            lua_close(app.L);
            return 1;
        }
        app.file = file;
        config_changed(&app);
    } else {
        text = lg_xstrdup(inline_conf);
        len = strlen(text);
    }
    if (load(&app, text, len, file ? file : "config", &app.conf, &app.dump, &err) != LG_OK) {
        fprintf(stderr, "lunagate: %s\n", err.msg);
        free(text);
        lua_close(app.L);
        return 1;
    }
    free(text);
    if (validate) {
        printf("%s: configuration is valid\n", file ? file : "config");
        lg_conf_unref(app.conf);
        free(app.dump);
        lua_close(app.L);
        return 0;
    }

    signal(SIGPIPE, SIG_IGN);
    app.base = event_base_new();
    app.nworkers = app.conf->workers > 0 ? app.conf->workers : nprocs();
    if (lg_runtime_start(app.L, app.conf, app.nworkers, &err) != LG_OK) {
        fprintf(stderr, "lunagate: %s\n", err.msg);
        goto fail;
    }
    lg_admin_ops_t ops = {op_ready, op_dump, op_quit, op_metrics, &app};
    app.admin = lg_admin_start(app.base, app.conf->readiness_addr, app.conf->admin_addr,
                               app.conf->stats_addr, &ops, &err);
    if (!app.admin) {
        lg_log(LG_LOG_ERR, "main", "%s", err.msg);
        goto fail;
    }
    app.workers = lg_workers_new(app.nworkers, app.conf, &err);
    if (!app.workers) {
        lg_log(LG_LOG_ERR, "main", "%s", err.msg);
        goto fail;
    }
    if (lg_workers_start(app.workers, app.nworkers, &err) != LG_OK) {
        lg_log(LG_LOG_ERR, "main", "%s", err.msg);
        exit(1); /* some threads may run: nothing can be freed safely */
    }
    app.sigterm = evsignal_new(app.base, SIGTERM, signal_cb, &app);
    app.sigint = evsignal_new(app.base, SIGINT, signal_cb, &app);
    app.sighup = evsignal_new(app.base, SIGHUP, signal_cb, &app);
    event_add(app.sigterm, NULL);
    event_add(app.sigint, NULL);
    event_add(app.sighup, NULL);
    app.watch = event_new(app.base, -1, EV_PERSIST, watch_cb, &app);
    struct timeval every = {1, 0};
    event_add(app.watch, &every);
    app.ready = 1;
    {
        char ports[256] = "";
        size_t off = 0;
        for (size_t i = 0; i < app.conf->nbinds && off < sizeof(ports) - 8; i++)
            off += (size_t)snprintf(ports + off, sizeof(ports) - off, "%s%d", i ? "," : "",
                                    app.conf->binds[i].port);
        lg_log(LG_LOG_INFO, "main",
               "lunagate %s started: %d worker%s, ports %s, readiness %s, stats %s, admin %s",
               LG_VERSION, app.nworkers, app.nworkers == 1 ? "" : "s", off ? ports : "none",
               app.conf->readiness_addr ? app.conf->readiness_addr : "off",
               app.conf->stats_addr ? app.conf->stats_addr : "off",
               app.conf->admin_addr ? app.conf->admin_addr : "off");
    }
    event_base_dispatch(app.base);

    /* graceful stop: workers drain; the management endpoints keep answering meanwhile */
    lg_workers_stop(app.workers, app.nworkers, app.conf->drain_ms);
    lg_log(LG_LOG_INFO, "main", "stopped");
    lg_workers_free(app.workers, app.nworkers);
    lg_admin_free(app.admin);
    event_free(app.sigterm);
    event_free(app.sigint);
    event_free(app.sighup);
    event_free(app.watch);
    lg_runtime_stop();
    lg_conf_unref(app.conf);
    free(app.dump);
    lua_close(app.L);
    event_base_free(app.base);
    libevent_global_shutdown();
    return 0;

fail:
    lg_workers_free(app.workers, app.nworkers);
    lg_admin_free(app.admin);
    lg_runtime_stop();
    lg_conf_unref(app.conf);
    free(app.dump);
    lua_close(app.L);
    event_base_free(app.base);
    return 1;
}
