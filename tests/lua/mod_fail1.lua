-- Entry module: worker 1 raises, worker 0 returns normally.
return function(w)
  if w == 1 then error("boom from worker 1") end
  return "worker " .. w .. " done"
end
