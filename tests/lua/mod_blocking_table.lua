-- A module for treadle.blocking that returns a table, not a function.
return {}
