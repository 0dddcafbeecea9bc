"""The offline model server: a Messages API stand-in that needs no network and no key."""
