-- Entry module: worker 0 raises.
return function(w)
  if w == 0 then error("boom from worker 0") end
  return w
end
