import sys

from dcic_jax.cli import main

sys.exit(main())
