import sys

from elastichash.cli import main

sys.exit(main())
