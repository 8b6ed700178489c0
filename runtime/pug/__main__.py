"""`python -m pug devserver` is `pug devserver`."""

from pug.devserver import main

raise SystemExit(main())
