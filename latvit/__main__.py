import sys

from latvit.cli import main

sys.exit(main())
