"""The parts of `pug.testing.FakePug`: `server` (requests in, checked by the server's rules
from `pug.rules`, answered), `query` (what the fake holds and how reads are computed from
it), `assertions` (`assert_tracked` and its diffs). Import FakePug from `pug.testing`."""
