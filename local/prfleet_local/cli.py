"""The `prfleet` command (placeholder until the local stack lands)."""

def main() -> int:
    return 0
