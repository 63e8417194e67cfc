"""The stand-in kubeadm: commands (`cli`), configuration (`schema`, `config`, `validation`),
the phases of init/join/reset, and what they share."""
