"""llm-lab alignment: reward modelling and preference optimisation on top of an SFT policy."""
