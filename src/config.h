/* config.h -- config loading: environment expansion, YAML -> Lua table with positions,
 * and the call into lua/lunagate/config.lua that validates and normalises it.
 * SPDX-License-Identifier: MIT
 *
 * Threading: everything here runs on the main thread at startup and on reload; the
 * functions keep no global state, so two lua_States may load configs concurrently. */
#ifndef LG_CONFIG_H
#define LG_CONFIG_H

#include <stddef.h>

#include <lua.h>

#include "common.h"

/* Maximum nesting depth of a YAML document and maximum number of nodes (aliases
 * count with every node they copy); beyond either the document is rejected. */
#define LG_CONFIG_MAX_DEPTH 256
#define LG_CONFIG_MAX_NODES 1000000

/* Expands $VAR, ${VAR} and ${VAR:-default} from the environment; $$ is a literal $.
 * An unset (or, for :-, empty) variable expands to "" (or the default, taken literally).
 * A $ not followed by a name, "{" or "$" stays as is; "${" must close on its line. Lines
 * whose first non-blank character is '#' (whole-line comments) are copied verbatim.
 * `in` is borrowed (`len` bytes, need not be NUL-terminated). Returns a NUL-terminated
 * malloc'd string, caller frees with free(); its length goes to *outlen when outlen is
 * non-NULL. Returns NULL with `err` filled ("LINE:COL: unterminated '${'", 1-based) on a
 * malformed reference. */
char *lg_config_expand_env(const char *in, size_t len, size_t *outlen, lg_err_t *err);

/* Parses YAML (or JSON) `text` (borrowed, `len` bytes) and pushes two values:
 *   tree -- nested tables (mappings have string keys, sequences are 1..n arrays),
 *           strings, integers, floats, booleans, and the null sentinel for YAML null;
 *   meta -- a table with weak keys mapping each table in tree to
 *           { line=, col=, kind="map"|"seq", keys={ordered keys}, pos={[key]={line,col}} }
 *           where for sequences keys is absent and pos is indexed 1..n (positions of items).
 * Lines and columns are 1-based; a mapping's pos gives the position of each key.
 * The null sentinel is lightuserdata NULL, which equals cjson.null and
 * require("lunagate.config").null. Plain scalars resolve like YAML 1.2's core schema
 * (null ~ empty, true/false, ints in decimal/0x/0o, floats, .inf, .nan); quoted and block
 * scalars are always strings. Aliases copy the anchored node; "<<" merge keys are honoured.
 * Only the first document of a stream is used; an empty stream gives an empty table.
 * `filename` (borrowed) only prefixes messages. Returns LG_OK, or LG_ERR with `err` set to
 * "FILE:LINE:COL: message" (stack unchanged). */
int lg_config_push_yaml(lua_State *L, const char *text, size_t len, const char *filename,
                        lg_err_t *err);

/* The whole pipeline: expands the environment, parses YAML, then calls
 * require("lunagate.config").load(tree, meta, filename) and leaves the normalised config
 * table on the stack. L must have lua/ on package.path and cjson loadable (caller's job).
 * Returns LG_OK, or LG_ERR with a one-line "FILE:LINE:COL: path: message" in `err` (stack
 * unchanged). */
int lg_config_load(lua_State *L, const char *text, size_t len, const char *filename, lg_err_t *err);

/* Reads the whole of `path` ("-" = stdin) into a malloc'd, NUL-terminated buffer (caller
 * frees with free()) and stores its length in *len. Returns NULL with `err` filled
 * ("PATH: strerror") on failure. */
char *lg_config_read_file(const char *path, size_t *len, lg_err_t *err);

/* Opens the Lua module "lunagate.yaml":
 *   yaml.parse(text [, filename]) -> tree, meta | nil, err
 *   yaml.expand_env(text)         -> string | nil, err
 *   yaml.null                     -- the null sentinel (lightuserdata NULL)
 * The runtime registers it in package.preload["lunagate.yaml"]. */
int luaopen_lunagate_yaml(lua_State *L);

#endif
