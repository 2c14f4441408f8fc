"""The local stack: the contest's services as plain processes, limited like docker-compose.yml.

``python -m stack up|down|status`` runs PostgreSQL, Memcached, two runtime instances, Nginx and
two processor emulators under a project folder (``var/stack`` by default), each service except
the emulators under the CPU and memory limits that ``docker-compose.yml`` gives it.
"""
