import sys

from gateway.app import main

sys.exit(main())
