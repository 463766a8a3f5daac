{#- What `sitectl lab up` generates and the lab's pillar needs, read on the master when it
    compiles a minion's pillar (opts.root_dir is the lab's state dir). Jinja, so yamllint
    skips this file (Makefile). Only public values: the TLS certificate of the lab's pebble,
    which the reverse proxy's certbot must trust (site.acme.ca_bundle). #}
{%- set acme_ca = opts['root_dir'] ~ '/lab-acme/acme-tls.pem' %}
{%- if salt['file.file_exists'](acme_ca) %}
site:
  acme:
    ca_bundle: {{ salt['file.read'](acme_ca) | json }}
{%- endif %}
