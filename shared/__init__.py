"""Models, settings, Redis key names and logging shared by producer and worker."""
