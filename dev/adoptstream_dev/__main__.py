import sys

from adoptstream_dev.cli import main

sys.exit(main())
