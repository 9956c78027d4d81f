"""CapFilt's selection: from score tables to the bootstrapped dataset, cheaply and exactly (`blip select`)."""
