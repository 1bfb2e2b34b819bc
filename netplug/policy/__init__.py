"""Network policy: the validated model (``model``) and the nftables plan (``plan``).

Both are pure: JSON in, immutable policies out; policies, networks and
containers in, nftables text out. Storing policies is ``netplug.ipam.policies``'
job, programming the kernel the agent's.
"""
