{#- The mailcow role: mailcow-dockerized at the pinned tag on Docker, its
    mailcow.conf from the site with every secret from Vault, the stack started
    (and moved with the pin by mailcow's own update steps), the site's mail
    domains, mailboxes and aliases through its API, the DNS records of each
    domain published as code, and the mail certificate the proxy issues.
    With `mailcow:stack: false` (the lab, where mailcow's images are
    unreachable) only what needs no image runs: the certificate. #}
{%- from 'mailcow/map.jinja' import mc %}
include:
  - mailcow.certificate
{%- if mc.stack %}
  - mailcow.python
  - mailcow.checkout
  - mailcow.config
  - mailcow.stack
  - mailcow.mail
  - mailcow.dns
{%- endif %}
