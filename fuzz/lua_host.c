/*
 * A minimal Lua 5.4 interpreter for `make test-asan`: built with
 * -fsanitize=address,undefined, it carries the ASan runtime itself, so the
 * sanitized wxpay/core.so can be loaded without LD_PRELOAD.  (LD_PRELOAD would
 * also reach every child a spec starts -- curl, sh, python3 -- and the Debian
 * curl binary deadlocks at start-up under a preloaded ASan runtime.)
 *
 *   build/asan/lua5.4 SCRIPT [ARGS...]
 *
 * Behaves like `lua5.4 SCRIPT ARGS...` for what busted needs: the global
 * `arg` (arg[-1] = this program, arg[0] = SCRIPT), the arguments as `...`, a
 * leading "#!" line skipped, errors printed with a traceback, exit status 1
 * on error, and the state closed (so every __gc runs) on a normal end.
 */
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

static int traceback(lua_State *L)
{
    const char *msg = lua_tostring(L, 1);
    if (msg == NULL) {
        if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
            return 1;
        msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

int main(int argc, char **argv)
{
    lua_State *L;
    int i, status;
    if (argc < 2) {
        fprintf(stderr, "usage: %s SCRIPT [ARGS...]\n", argv[0]);
        return 2;
    }
    L = luaL_newstate();
    if (!L) {
        fprintf(stderr, "%s: cannot create a Lua state\n", argv[0]);
        return 1;
    }
    luaL_openlibs(L);
    lua_createtable(L, argc - 2, 2);
    for (i = 0; i < argc; i++) {
        lua_pushstring(L, argv[i]);
        lua_rawseti(L, -2, i - 1);
    }
    lua_setglobal(L, "arg");

    lua_pushcfunction(L, traceback);
    status = luaL_loadfile(L, argv[1]);
    if (status == LUA_OK) {
        luaL_checkstack(L, argc, "too many arguments");
        for (i = 2; i < argc; i++) lua_pushstring(L, argv[i]);
        status = lua_pcall(L, argc - 2, 0, 1);
    }
    if (status != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        fprintf(stderr, "%s: %s\n", argv[0], msg ? msg : "(error object is not a string)");
        fflush(stderr);
    }
    lua_close(L);
    return status == LUA_OK ? 0 : 1;
}
