/* test_lapi_proc.c -- lg.process: spawn cat and sh, line I/O, EOF, env, kill and reaping.
 * SPDX-License-Identifier: MIT */
#include "test.h"

#include "../../src/lapi_proc.c"

#include <lualib.h>
#include <sys/wait.h>

static struct event_base *base;
static int done_count, want_count;

static int test_resumer(lua_State *co, int nargs, void *arg)
{
    int nres = 0;
    int st = lua_resume(co, NULL, nargs, &nres);
    if (st == LUA_YIELD) {
        lua_pop(co, nres);
        return st;
    }
    if (st != LUA_OK)
        printf("# coroutine error: %s\n", lua_tostring(co, -1));
    lua_settop(co, 0);
    if (++done_count >= want_count)
        event_base_loopbreak(base);
    return st;
}

static void run(lua_State *L, const char *chunk)
{
    done_count = 0;
    want_count = 1;
    lua_State *co = lua_newthread(L);
    int ref = luaL_ref(L, LUA_REGISTRYINDEX);
    if (luaL_loadstring(co, chunk) != LUA_OK) {
        printf("# load error: %s\n", lua_tostring(co, -1));
        luaL_unref(L, LUA_REGISTRYINDEX, ref);
        return;
    }
    test_resumer(co, 0, NULL);
    luaL_unref(L, LUA_REGISTRYINDEX, ref);
    struct timeval tv = {10, 0};
    event_base_loopexit(base, &tv);
    if (done_count < want_count)
        event_base_dispatch(base);
}

static const char *gstr(lua_State *L, const char *expr)
{
    static char buf[4][1024];
    static int k;
    char code[512];
    snprintf(code, sizeof(code), "return tostring(%s)", expr);
    (void)!luaL_dostring(L, code);
    k = (k + 1) % 4;
    snprintf(buf[k], sizeof(buf[k]), "%s", lua_tostring(L, -1));
    lua_pop(L, 1);
    return buf[k];
}

static void drain(int ms)
{
    struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
    event_base_loopexit(base, &tv);
    event_base_dispatch(base);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    base = event_base_new();
    lg_err_t err;
    lg_upool_t *pool = lg_upool_new(base, &err);
    lua_State *L = luaL_newstate();
    luaL_openlibs(L);
    luaL_requiref(L, "lunagate", luaopen_lunagate, 0); /* lg */
    lg_lapi_inject_http(L);
    lg_lapi_inject_proc(L);
    lua_pop(L, 1);
    lg_lapi_http_bind(L, base, pool);
    lg_lapi_http_set_resumer(L, test_resumer, NULL);
    (void)!luaL_dostring(L, "lg = require 'lunagate'; R = {}");

    run(L, "local p = assert(lg.process.spawn{cmd = 'cat'})\n"
           "R.pid = p:pid()\n"
           "p:write('hello'); p:write('second line\\n')\n"
           "R.l1 = p:read_line(); R.l2 = p:read_line()\n"
           "local big = string.rep('x', 200000); p:write(big); R.big = #p:read_line()\n"
           "p:kill(); P_CAT = p");
    ok_streq(gstr(L, "R.l1"), "hello", "cat echoes a line (newline appended)");
    ok_streq(gstr(L, "R.l2"), "second line", "second line");
    ok_streq(gstr(L, "R.big"), "200000", "a 200 kB line crosses many pipe reads");
    pid_t cat_pid = (pid_t)atoi(gstr(L, "R.pid"));
    ok(cat_pid > 0, "pid() is a pid");
    drain(300);
    ok(kill(cat_pid, 0) < 0 && errno == ESRCH, "killed child is gone and reaped (no zombie)");
    ok(luaL_dostring(L, "P_CAT:write('x')") != LUA_OK, "write on a killed handle raises");
    lua_settop(L, 0);

    run(L, "local p = assert(lg.process.spawn{cmd = 'sh', args = {'-c',"
           " 'echo \"$FOO|${HOME:-nohome}\"; read x; echo \"got $x\"; printf tail; exit 3'},"
           " env = {FOO = 'bar'}, clear_env = true})\n"
           "R.env = p:read_line(); p:write('ping'); R.got = p:read_line()\n"
           "R.tail = p:read_line(); R.eof = tostring(p:read_line())");
    ok_streq(gstr(L, "R.env"), "bar|nohome", "env set and clear_env drops the rest");
    ok_streq(gstr(L, "R.got"), "got ping", "stdin reaches the child");
    ok_streq(gstr(L, "R.tail"), "tail", "last line without newline");
    ok_streq(gstr(L, "R.eof"), "nil", "nil at EOF");

    setenv("LG_PROC_TEST", "inherited", 1);
    run(L, "local p = lg.process.spawn{cmd = 'sh', args = {'-c', 'echo $LG_PROC_TEST'}}\n"
           "R.inh = p:read_line()\n"
           "local q, e = lg.process.spawn{cmd = '/nonexistent/binary'}; R.noent = e\n"
           "local s = lg.process.spawn{cmd = 'sleep', args = {'5'}}\n"
           "local l, e2 = s:read_line(50); R.tmo = e2; S_PID = s:pid(); s:close()");
    ok_streq(gstr(L, "R.inh"), "inherited", "environment inherited by default");
    ok(strstr(gstr(L, "R.noent"), "No such file") != NULL, "missing command: nil, err (%s)",
       gstr(L, "R.noent"));
    ok_streq(gstr(L, "R.tmo"), "timeout", "read_line timeout");
    pid_t sleep_pid = (pid_t)atoi(gstr(L, "S_PID"));
    drain(300);
    ok(kill(sleep_pid, 0) < 0, "closed child was terminated and reaped");

    /* a handle dropped without close(): the GC kills the child */
    run(L, "local p = lg.process.spawn{cmd = 'cat'}; G_PID = p:pid(); p = nil");
    pid_t gc_pid = (pid_t)atoi(gstr(L, "G_PID"));
    lua_gc(L, LUA_GCCOLLECT);
    drain(300);
    ok(kill(gc_pid, 0) < 0, "collected handle kills its child");

    /* another child of the process is left alone by the reaper */
    pid_t other = fork();
    if (other == 0) {
        usleep(400000);
        _exit(7);
    }
    run(L, "local p = lg.process.spawn{cmd = 'true'}; R.t = tostring(p:read_line())");
    drain(200);
    int st = 0;
    ok(waitpid(other, &st, 0) == other && WEXITSTATUS(st) == 7,
       "unrelated child still ours to reap");

    run(L, "P_LEFT = lg.process.spawn{cmd = 'cat'}; R.left = P_LEFT:pid()");
    pid_t left = (pid_t)atoi(gstr(L, "R.left"));
    lua_close(L); /* kills and reaps what is left */
    ok(kill(left, 0) < 0, "lua_close kills remaining children");
    lg_upool_free(pool);
    event_base_free(base);
    return test_done();
}
