"""Tools around the job: the demo, sample faces, sharding an image folder, benchmark helpers."""
