"""``python -m mixchat``."""

from mixchat.cli import main

if __name__ == "__main__":
    main()
