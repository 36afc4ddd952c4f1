"""The emulator: builds a network (or none), starts node programs in it, collects their outputs."""
