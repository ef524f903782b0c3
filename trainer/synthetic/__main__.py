"""python -m trainer.synthetic --help"""
import sys

from trainer.synthetic.run import main

sys.exit(main())
