{#- The mail certificate (the proxy's lineage of the mail route) where mailcow
    reads it, pulled from Vault by this guest's own highstate: the master's
    renewal runner pushes each new certificate as soon as the proxy has it
    (first issuance included), and this catches up a guest that was not there
    then. The services using it are restarted when a file changed (the
    reverse_proxy role's mail_certificate:reload_cmd; none in the lab). #}
{%- from 'mailcow/map.jinja' import rp, mc, mail_lineage %}
{%- set handover = rp.mail_certificate %}
{%- if mail_lineage %}
{%-   if mc.stack.converge %}
include:
  - mailcow.stack
{%-   endif %}

mailcow-certificate-installed:
  certificate_handover.installed:
    - name: {{ handover.vault_path }}/{{ mail_lineage }}
    - destinations: {{ handover.files | json }}
    - reload_cmd: {{ (handover.reload_cmd if mc.stack.converge else none) | json }}
{%- if mc.stack.converge %}
    - require:
      - cmd: mailcow-stack-up
{%- endif %}
{%- endif %}
