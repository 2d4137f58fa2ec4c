-- Where the per-project probe of an external key resumes (a type whose
-- customer can refuse single projects, AWS): the last project id a check
-- probed, "" for the start. A check probes a bounded batch of the key's
-- projects after it and moves it on, so a full cycle over any number of
-- projects takes a known number of probe rounds, whichever replica holds
-- the key's probe lease in each.

ALTER TABLE external_keys ADD COLUMN project_probe_after TEXT NOT NULL DEFAULT '';
