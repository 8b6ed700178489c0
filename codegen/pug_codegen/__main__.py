"""`python -m pug_codegen` is `pug-codegen`."""

from pug_codegen.cli import main

raise SystemExit(main())
