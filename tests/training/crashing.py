"""A sequence that fails on its n-th read: a loader worker killed in the middle of a step (the resume tests)."""


class CrashAfter:
    def __init__(self, items, n):
        self.items, self.left = items, n

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        self.left -= 1
        if self.left < 0:
            raise RuntimeError("simulated crash")
        return self.items[i]
