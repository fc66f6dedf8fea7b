import sys

from indexer_worker.worker import main

sys.exit(main(sys.argv[1:]))
