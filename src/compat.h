/* One source for Lua 5.4 and LuaJIT (Lua 5.1 ABI): the few 5.2+ calls we use.
 * Prefixed copies, so they never clash with LuaJIT 2.1's own partial set. */
#ifndef WX_COMPAT_H
#define WX_COMPAT_H

#include <lua.h>
#include <lauxlib.h>

#if !defined(LUA_VERSION_NUM) || LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))

static void wx_setfuncs(lua_State *L, const luaL_Reg *l, int nup)
{
    luaL_checkstack(L, nup + 1, "too many upvalues");
    for (; l->name != NULL; l++) {
        int i;
        for (i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}

static void wx_setmetatable(lua_State *L, const char *tname)
{
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}

#undef luaL_newlib
#define luaL_setfuncs wx_setfuncs
#define luaL_setmetatable wx_setmetatable
#define luaL_newlib(L, l) (lua_newtable(L), wx_setfuncs((L), (l), 0))
#endif

#endif
