#include "ltreadle.h"
void lt_open_process(lua_State *L) { (void)L; }
