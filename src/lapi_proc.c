/* lapi_proc.c -- lg.process: child processes talking line by line over stdio pipes.
 * SPDX-License-Identifier: MIT
 *
 * A child's record (proc_t) is owned by the state's process list, not by the Lua handle: the
 * handle can be collected while the child is still being reaped. The record is freed once the
 * handle let go of it and the child was reaped. Writes to a child that died fail with EPIPE,
 * which needs SIGPIPE ignored (the gateway does; tests must too). */
#include "lapi_proc.h"

#include "common.h"
#include "lapi.h"
#include "lapi_http.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <fcntl.h>
#include <lauxlib.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

extern char **environ;

#define PROC_MT        "lunagate.process"
#define LINE_MAX_BYTES (16u << 20)
#define REAP_POLL_MS   50

typedef struct pbind pbind_t;
typedef struct proc proc_t;

struct proc {
    pbind_t *b;
    proc_t *next, *prev;
    pid_t pid;
    int reaped, killed, released; /* released: no Lua handle points here any more */
    int eof;
    char *err;
    struct bufferevent *out, *in; /* child's stdout (we read), child's stdin (we write) */
    lua_State *co;                /* coroutine waiting in read_line */
    int co_ref;
    struct event *timer; /* read timeout */
    struct event *reap;  /* reaping poll */
    int64_t kill_at;     /* monotonic us: SIGKILL after this, 0 = not scheduled */
};

struct pbind {
    lua_State *L;
    struct event_base *base;
    proc_t *procs;
};

typedef struct phandle {
    proc_t *p;
} phandle_t;

static char pbind_key;

static void proc_free(proc_t *p)
{
    if (p->co_ref != LUA_NOREF)
        luaL_unref(p->b->L, LUA_REGISTRYINDEX, p->co_ref);
    if (p->prev)
        p->prev->next = p->next;
    else
        p->b->procs = p->next;
    if (p->next)
        p->next->prev = p->prev;
    if (p->out)
        bufferevent_free(p->out);
    if (p->in)
        bufferevent_free(p->in);
    if (p->timer)
        event_free(p->timer);
    if (p->reap)
        event_free(p->reap);
    free(p->err);
    free(p);
}

static int pbind_gc(lua_State *L)
{
    pbind_t *b = lua_touserdata(L, 1);
    while (b->procs) {
        proc_t *p = b->procs;
        if (!p->reaped) {
            kill(-p->pid, SIGKILL);
            kill(p->pid, SIGKILL);
            while (waitpid(p->pid, NULL, 0) < 0 && errno == EINTR)
                ;
            p->reaped = 1;
        }
        proc_free(p);
    }
    return 0;
}

static pbind_t *get_pbind(lua_State *L)
{
    lua_rawgetp(L, LUA_REGISTRYINDEX, &pbind_key);
    pbind_t *b = lua_touserdata(L, -1);
    lua_pop(L, 1);
    if (b)
        return b;
    struct event_base *base = lg_lapi_http_base(L);
    if (!base)
        return NULL;
    b = lua_newuserdatauv(L, sizeof(*b), 0); /* b */
    memset(b, 0, sizeof(*b));
    b->base = base;
    lua_createtable(L, 0, 1);
    lua_pushcfunction(L, pbind_gc);
    lua_setfield(L, -2, "__gc");
    lua_setmetatable(L, -2);
    lua_rawsetp(L, LUA_REGISTRYINDEX, &pbind_key); /* */
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    b->L = lua_tothread(L, -1);
    lua_pop(L, 1);
    return b;
}

/* ---- Reaping ---- */

static void reap_cb(evutil_socket_t fd, short what, void *arg)
{
    proc_t *p = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    if (!p->reaped) {
        pid_t r = waitpid(p->pid, NULL, WNOHANG);
        if (r == p->pid || (r < 0 && errno == ECHILD)) {
            p->reaped = 1;
        } else if (p->kill_at && lg_mono_us() >= p->kill_at) {
            kill(-p->pid, SIGKILL);
            kill(p->pid, SIGKILL);
            p->kill_at = 0;
        }
    }
    if (p->reaped) {
        if (p->released)
            proc_free(p);
        return;
    }
    struct timeval tv = {0, REAP_POLL_MS * 1000};
    evtimer_add(p->reap, &tv);
}

static void start_reaping(proc_t *p)
{
    if (p->reaped || evtimer_pending(p->reap, NULL))
        return;
    struct timeval tv = {0, 0};
    evtimer_add(p->reap, &tv);
}

static void proc_kill(proc_t *p)
{
    if (!p->reaped && !p->killed) {
        p->killed = 1;
        kill(-p->pid, SIGTERM);
        kill(p->pid, SIGTERM);
        p->kill_at = lg_mono_us() + (int64_t)LG_PROC_KILL_GRACE_MS * 1000;
    }
    if (p->in) {
        bufferevent_free(p->in);
        p->in = NULL;
    }
    start_reaping(p);
}

/* ---- Reading ---- */

/* Pushes the next line (or EOF / error) onto co when there is one; returns nargs or 0. */
static int take_line(lua_State *co, proc_t *p)
{
    if (!p->out) {
        lua_pushnil(co);
        lua_pushstring(co, p->err ? p->err : "closed");
        return 2;
    }
    struct evbuffer *in = bufferevent_get_input(p->out);
    size_t n;
    char *line = evbuffer_readln(in, &n, EVBUFFER_EOL_LF);
    if (line) {
        if (n && line[n - 1] == '\r')
            n--;
        lua_pushlstring(co, line, n);
        free(line);
        return 1;
    }
    size_t left = evbuffer_get_length(in);
    if (p->eof) {
        if (left) { /* a last line without "\n" */
            lua_pushlstring(co, (const char *)evbuffer_pullup(in, -1), left);
            evbuffer_drain(in, left);
            return 1;
        }
        if (p->err) {
            lua_pushnil(co);
            lua_pushstring(co, p->err);
            return 2;
        }
        lua_pushnil(co);
        return 1;
    }
    if (left > LINE_MAX_BYTES) {
        lua_pushnil(co);
        lua_pushliteral(co, "line too long");
        return 2;
    }
    return 0;
}

static void wake_reader(proc_t *p, int nargs)
{
    lua_State *co = p->co;
    int ref = p->co_ref;
    lua_State *L = p->b->L;
    p->co = NULL;
    p->co_ref = LUA_NOREF;
    evtimer_del(p->timer);
    lg_lapi_http_resume(co, nargs);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
}

static void try_deliver(proc_t *p)
{
    if (!p->co)
        return;
    int n = take_line(p->co, p);
    if (n)
        wake_reader(p, n);
}

static void out_read_cb(struct bufferevent *bev, void *arg)
{
    LG_UNUSED(bev);
    try_deliver(arg);
}

static void out_event_cb(struct bufferevent *bev, short what, void *arg)
{
    proc_t *p = arg;
    LG_UNUSED(bev);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        if ((what & BEV_EVENT_ERROR) && !p->err) {
            char msg[200];
            snprintf(msg, sizeof(msg), "reading from child %d: %s", (int)p->pid, strerror(errno));
            p->err = lg_xstrdup(msg);
        }
        p->eof = 1;
        bufferevent_disable(p->out, EV_READ);
        start_reaping(p);
        try_deliver(p);
    }
}

static void in_event_cb(struct bufferevent *bev, short what, void *arg)
{
    proc_t *p = arg;
    LG_UNUSED(bev);
    if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
        bufferevent_free(p->in); /* the child closed its stdin (or died): writes now fail */
        p->in = NULL;
    }
}

static void read_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
    proc_t *p = arg;
    LG_UNUSED(fd);
    LG_UNUSED(what);
    if (!p->co)
        return;
    lua_pushnil(p->co);
    lua_pushliteral(p->co, "timeout");
    wake_reader(p, 2);
}

/* ---- Spawning ---- */

static char **string_list(lua_State *L, int idx, const char *first, size_t *n_out)
{
    size_t n = idx ? lua_rawlen(L, idx) : 0;
    char **v = lg_xcalloc(n + 2, sizeof(char *));
    size_t k = 0;
    if (first)
        v[k++] = lg_xstrdup(first);
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        const char *s = lua_tostring(L, -1);
        v[k++] = lg_xstrdup(s ? s : "");
        lua_pop(L, 1);
    }
    *n_out = k;
    return v;
}

static void free_list(char **v)
{
    if (!v)
        return;
    for (char **p = v; *p; p++)
        free(*p);
    free(v);
}

/* The child's environment: the gateway's (unless clear_env) with env's entries set. */
static char **build_env(lua_State *L, int envidx, int clear)
{
    size_t n = 0, cap = 16;
    char **v = lg_xcalloc(cap, sizeof(char *));
    if (!clear)
        for (char **e = environ; *e; e++) {
            if (envidx) {
                const char *eq = strchr(*e, '=');
                size_t kl = eq ? (size_t)(eq - *e) : strlen(*e);
                lua_pushlstring(L, *e, kl);
                int overridden = lua_rawget(L, envidx) != LUA_TNIL;
                lua_pop(L, 1);
                if (overridden)
                    continue;
            }
            if (n + 2 >= cap)
                v = lg_xrealloc(v, (cap *= 2) * sizeof(char *));
            v[n++] = lg_xstrdup(*e);
        }
    if (envidx) {
        lua_pushnil(L);
        while (lua_next(L, envidx)) {
            if (lua_type(L, -2) == LUA_TSTRING && lua_tostring(L, -1)) {
                const char *k = lua_tostring(L, -2), *val = lua_tostring(L, -1);
                char *kv = lg_xmalloc(strlen(k) + strlen(val) + 2);
                sprintf(kv, "%s=%s", k, val);
                if (n + 2 >= cap)
                    v = lg_xrealloc(v, (cap *= 2) * sizeof(char *));
                v[n++] = kv;
            }
            lua_pop(L, 1);
        }
    }
    v[n] = NULL;
    return v;
}

static int proc_spawn(lua_State *L)
{
    luaL_checktype(L, 1, LUA_TTABLE);
    pbind_t *b = get_pbind(L);
    if (!b)
        return luaL_error(L, "lg.process.spawn: no event loop bound to this state");
    lua_getfield(L, 1, "cmd"); /* opts cmd */
    const char *cmd = lua_tostring(L, -1);
    if (!cmd)
        return luaL_error(L, "bad argument #1 to 'spawn' (cmd required)");
    int argsidx = lua_getfield(L, 1, "args") == LUA_TTABLE ? lua_gettop(L) : 0;
    int envidx = lua_getfield(L, 1, "env") == LUA_TTABLE ? lua_gettop(L) : 0;
    lua_getfield(L, 1, "clear_env");
    int clear = lua_toboolean(L, -1);
    lua_getfield(L, 1, "stderr");
    const char *errmode = lua_tostring(L, -1);
    int devnull = errmode && strcmp(errmode, "null") == 0;

    size_t nargv;
    char **argv = string_list(L, argsidx, cmd, &nargv);
    char **envp = build_env(L, envidx, clear);

    int pin[2] = {-1, -1}, pout[2] = {-1, -1};
    if (pipe2(pin, O_CLOEXEC) < 0 || pipe2(pout, O_CLOEXEC) < 0) {
        int e = errno;
        for (int i = 0; i < 2; i++) {
            if (pin[i] >= 0)
                close(pin[i]);
        }
        free_list(argv);
        free_list(envp);
        lua_pushnil(L);
        lua_pushfstring(L, "spawn %s: pipe: %s", cmd, strerror(e));
        return 2;
    }
    posix_spawn_file_actions_t fa;
    posix_spawnattr_t at;
    posix_spawn_file_actions_init(&fa);
    posix_spawn_file_actions_adddup2(&fa, pin[0], 0);
    posix_spawn_file_actions_adddup2(&fa, pout[1], 1);
    if (devnull)
        posix_spawn_file_actions_addopen(&fa, 2, "/dev/null", O_WRONLY, 0);
    posix_spawnattr_init(&at);
    sigset_t none, dfl;
    sigemptyset(&none);
    sigemptyset(&dfl);
    sigaddset(&dfl, SIGPIPE);
    sigaddset(&dfl, SIGCHLD);
    sigaddset(&dfl, SIGTERM);
    sigaddset(&dfl, SIGINT);
    sigaddset(&dfl, SIGHUP);
    posix_spawnattr_setsigmask(&at, &none);
    posix_spawnattr_setsigdefault(&at, &dfl);
    posix_spawnattr_setpgroup(&at, 0);
    posix_spawnattr_setflags(&at, POSIX_SPAWN_SETPGROUP | POSIX_SPAWN_SETSIGMASK |
                                      POSIX_SPAWN_SETSIGDEF);
    pid_t pid;
    int rc = posix_spawnp(&pid, cmd, &fa, &at, argv, envp);
    posix_spawn_file_actions_destroy(&fa);
    posix_spawnattr_destroy(&at);
    free_list(argv);
    free_list(envp);
    close(pin[0]);
    close(pout[1]);
    if (rc != 0) {
        close(pin[1]);
        close(pout[0]);
        lua_pushnil(L);
        lua_pushfstring(L, "spawn %s: %s", cmd, strerror(rc));
        return 2;
    }
    evutil_make_socket_nonblocking(pin[1]);
    evutil_make_socket_nonblocking(pout[0]);

    proc_t *p = lg_xcalloc(1, sizeof(*p));
    p->b = b;
    p->pid = pid;
    p->co_ref = LUA_NOREF;
    p->out = bufferevent_socket_new(b->base, pout[0], BEV_OPT_CLOSE_ON_FREE);
    p->in = bufferevent_socket_new(b->base, pin[1], BEV_OPT_CLOSE_ON_FREE);
    bufferevent_setcb(p->out, out_read_cb, NULL, out_event_cb, p);
    bufferevent_setcb(p->in, NULL, NULL, in_event_cb, p);
    bufferevent_enable(p->out, EV_READ);
    bufferevent_enable(p->in, EV_WRITE);
    p->timer = evtimer_new(b->base, read_timeout_cb, p);
    p->reap = evtimer_new(b->base, reap_cb, p);
    p->next = b->procs;
    if (b->procs)
        b->procs->prev = p;
    b->procs = p;

    phandle_t *h = lua_newuserdatauv(L, sizeof(*h), 0);
    h->p = p;
    luaL_setmetatable(L, PROC_MT);
    return 1;
}

/* ---- Handle methods ---- */

static proc_t *check_proc(lua_State *L, int alive)
{
    phandle_t *h = luaL_checkudata(L, 1, PROC_MT);
    if (alive && !h->p)
        luaL_error(L, "process handle is closed");
    return h->p;
}

static int p_write(lua_State *L)
{
    proc_t *p = check_proc(L, 1);
    size_t n;
    const char *s = luaL_checklstring(L, 2, &n);
    if (!p->in) {
        lua_pushnil(L);
        lua_pushliteral(L, "stdin closed");
        return 2;
    }
    if (evbuffer_get_length(bufferevent_get_output(p->in)) > LINE_MAX_BYTES) {
        lua_pushnil(L);
        lua_pushliteral(L, "child is not reading its stdin");
        return 2;
    }
    bufferevent_write(p->in, s, n);
    if (n == 0 || s[n - 1] != '\n')
        bufferevent_write(p->in, "\n", 1);
    lua_pushboolean(L, 1);
    return 1;
}

static int p_read_line(lua_State *L)
{
    proc_t *p = check_proc(L, 1);
    lua_Integer tmo = luaL_optinteger(L, 2, 0);
    if (p->co)
        return luaL_error(L, "read_line: another coroutine is already reading");
    int n = take_line(L, p);
    if (n)
        return n;
    if (!lua_isyieldable(L))
        return luaL_error(L, "read_line: must be called from a yieldable coroutine");
    p->co = L;
    lua_pushthread(L);
    p->co_ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (tmo > 0) {
        struct timeval tv = {(time_t)(tmo / 1000), (suseconds_t)((tmo % 1000) * 1000)};
        evtimer_add(p->timer, &tv);
    }
    return lua_yield(L, 0);
}

static int p_pid(lua_State *L)
{
    proc_t *p = check_proc(L, 1);
    lua_pushinteger(L, p->pid);
    return 1;
}

static void handle_release(phandle_t *h)
{
    proc_t *p = h->p;
    if (!p)
        return;
    h->p = NULL;
    p->released = 1;
    if (p->co) { /* a reader in another coroutine: it will never be resumed */
        luaL_unref(p->b->L, LUA_REGISTRYINDEX, p->co_ref);
        p->co = NULL;
        p->co_ref = LUA_NOREF;
        evtimer_del(p->timer);
    }
    if (p->out) {
        bufferevent_free(p->out);
        p->out = NULL;
    }
    proc_kill(p);
}

static int p_kill(lua_State *L)
{
    phandle_t *h = luaL_checkudata(L, 1, PROC_MT);
    handle_release(h);
    return 0;
}

static int p_gc(lua_State *L)
{
    handle_release(lua_touserdata(L, 1));
    return 0;
}

void lg_lapi_proc_cancel(lua_State *co)
{
    lua_rawgetp(co, LUA_REGISTRYINDEX, &pbind_key);
    pbind_t *b = lua_touserdata(co, -1);
    lua_pop(co, 1);
    if (!b)
        return;
    for (proc_t *p = b->procs; p; p = p->next)
        if (p->co == co) {
            luaL_unref(b->L, LUA_REGISTRYINDEX, p->co_ref);
            p->co = NULL;
            p->co_ref = LUA_NOREF;
            evtimer_del(p->timer);
        }
}

void lg_lapi_inject_proc(lua_State *L)
{
    static const luaL_Reg methods[] = {
        {"write", p_write}, {"read_line", p_read_line},
        {"kill", p_kill},   {"close", p_kill},
        {"pid", p_pid},     {NULL, NULL},
    };
    static const luaL_Reg fns[] = {{"spawn", proc_spawn}, {NULL, NULL}};
    if (luaL_newmetatable(L, PROC_MT)) { /* lg mt */
        luaL_newlib(L, methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, p_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, p_gc);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);                  /* lg */
    luaL_newlib(L, fns);            /* lg process */
    lua_setfield(L, -2, "process"); /* lg */
}
