"""netplug's CNI plugins (netplug, netplug-ipam): request parsing, the commands, results,
errors, and the plugin's side of the agent socket."""

# The largest stdin a CNI call may carry; the plugins read no more than one byte
# past it, and the request parser refuses more (code 6). A config with its
# prevResult is a few KiB; GC's list of valid attachments, the largest input,
# holds about 100 bytes per container: 16 MiB is far beyond any host.
MAX_STDIN = 16 << 20
