"""Built-in octascope stage plugins, one subpackage per stage.

Each subpackage's ``__init__`` implements the registration hook of its stage; the plugin
classes live in small modules named for the method. Heavy libraries (torch, bm3d, Atomap)
are imported inside the methods that use them, so listing plugins stays fast.
"""
