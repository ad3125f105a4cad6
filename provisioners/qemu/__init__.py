"""The qemu provider: every node is a QEMU VM booted from a cached image and bootstrapped over SSH.

Modules: `image` builds and caches the bootable image (kernel, initramfs, Debian rootfs), `vm` boots
and stops one VM, `bootstrap` installs and starts the node agent in it over SSH (paramiko), and
`provider` is the `NodeProvider` (`QemuProvider`).
"""
