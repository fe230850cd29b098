-- Entry module: what `arg` a worker state sees (a copy of the script's).
return function(w)
  if type(arg) ~= "table" then return "no arg" end
  return arg[0], #arg, arg[1]
end
