import sys

from search_service.app import main

sys.exit(main())
