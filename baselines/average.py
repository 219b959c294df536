"""Average: no separation — the mixture itself given as every estimate (Table 2's reference row)."""
import torch

from surfbench.method import Method


class Average(Method):
    display_name = "Average"
    supervised = False
    generative = False
    citation = "The unseparated mixture (Table 2 of the SURF paper)"
    training_data = "none"
    domains = ("image", "audio")

    def phases(self):
        return []

    @torch.no_grad()
    def separate(self, mixtures, noise):
        k = self.n_sources
        return (mixtures / k).unsqueeze(1).expand(-1, k, *mixtures.shape[1:]).clone()
